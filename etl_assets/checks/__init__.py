"""Asset checks: contracts and business rules, evaluated on what the warehouse holds."""
