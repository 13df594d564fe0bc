"""Synthetic galactogram generator.

3D duct trees grown from the nipple, projected into CC and ML/MLO mammographic views.
"""
