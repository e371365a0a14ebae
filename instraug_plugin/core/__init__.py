"""Torch-free core: placeholders, reply extraction, filters, pool, sampling."""
