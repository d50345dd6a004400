"""Python face of csrc/: the compiled op when it is built and CUDA is present, else the PyTorch reference."""
