"""The model-bundle contract shared by training/ and service/: numpy, pydantic and onnxruntime
(the core dependencies), and Pillow for image models (`bundle.image_resize`), which both the train
and the serve extras install."""
