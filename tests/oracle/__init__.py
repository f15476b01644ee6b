"""Conformance suite: tpmdev against live QEMU (marker ``oracle``)."""
