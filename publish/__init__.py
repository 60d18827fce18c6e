"""Publish builds to stores with checksums; labels, promotion and retention."""
