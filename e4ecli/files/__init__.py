"""Inputs and outputs of batch work: safe image decoding, output naming, atomic writes, manifests."""
