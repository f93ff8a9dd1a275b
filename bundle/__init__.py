"""The model-bundle contract shared by training/ and service/: numpy and pydantic only."""
