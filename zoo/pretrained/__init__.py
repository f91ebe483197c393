"""Pretrained models the repo's own recipes produced (`make zoo`), with their manifest."""

from zoo.pretrained.loader import card, list_pretrained, load, manifest, manifest_entry

__all__ = ["card", "list_pretrained", "load", "manifest", "manifest_entry"]
