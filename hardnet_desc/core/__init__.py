"""The torch core: the network, its weights and patch settings, images, patches, devices and precisions.

Imports nothing of ``hardnet_desc`` outside ``core``; everything above builds on it.
"""
