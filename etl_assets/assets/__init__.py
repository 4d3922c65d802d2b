"""Asset definitions, one module per domain: thin wiring of sources -> transforms -> warehouse."""
