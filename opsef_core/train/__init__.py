"""Trainers for StarDist, Cellpose and the U-Net on folders of image/label pairs."""
