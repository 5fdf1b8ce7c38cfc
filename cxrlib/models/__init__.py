"""Networks: the conditional diffusion UNet (:mod:`cxrlib.models.unet`) and classifiers.

Submodules are imported explicitly (``from cxrlib.models.unet import ConditionalUNet``) so that
importing one does not pull in the dependencies of the others.
"""
