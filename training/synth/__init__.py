"""Synthetic galactogram generator: 3D duct trees projected into CC and ML/MLO mammographic views."""
