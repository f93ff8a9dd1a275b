"""Bytes to arrays and arrays to bytes: JSON, npy/npz, images, content negotiation. Pure functions
over bytes and numpy; every bad input raises a `service.errors` exception."""
