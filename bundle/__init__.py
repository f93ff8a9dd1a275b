"""The model-bundle contract shared by training/ and service/: numpy, pydantic, onnxruntime and
onnx (the core dependencies; onnx composes the mean path, `bundle.mean_path`), and Pillow for
image models (`bundle.image_resize`), which both the train and the serve extras install."""
