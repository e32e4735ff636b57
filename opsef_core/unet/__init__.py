"""Small PyTorch U-Nets (2D and 3D) and their model-folder format.

``opsef_core.unet.model`` builds the networks (torch is imported inside its
functions); ``opsef_core.unet.io`` reads and writes ``config.json`` +
``weights.pt`` model folders.
"""
