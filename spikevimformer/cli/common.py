"""Flags shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import argparse

import torch

from ..models import VARIANTS


def add_variant(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=default, help="backbone size")


def add_image_size(parser: argparse.ArgumentParser, default: int = 384) -> None:
    parser.add_argument("--image-size", type=int, default=default, help="square input side (multiple of 16)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0'...")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device
