"""Evaluation of synthesized images: FID, and mIoU / pixel accuracy of a segmentation network.

Takes images (or a ``generate(batch)`` callable) and label maps; never imports training.
"""
