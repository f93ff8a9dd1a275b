"""Offline half of vae-service: train VAEs with torch and export them as ONNX bundles."""
