"""Readers that turn the platform's sources into Ray Datasets."""
