"""The bundled weight files, installed as the data package ``hardnet_desc.weight_files``.

Not to be confused with :mod:`hardnet_desc.core.weights`, the module that finds, checks and loads
weights (this folder only holds the files). The repository keeps the folder at the top level as
``weights/``; ``setup.cfg`` maps it to ``hardnet_desc.weight_files`` so an installed package can
find its files with ``importlib.resources``.
"""
