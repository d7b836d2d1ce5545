"""The SSD scan (Mamba-2), with interchangeable backends; see ``kernels.ssd`` and DESIGN.md."""
