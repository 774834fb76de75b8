"""The bundle options shared by ``synthesize``, ``generate`` and ``slices``: layout and naming."""

import argparse
from typing import Any

from worker.bundle_layout import BundleLayout, BundleOptions
from worker.nnunet import nnunet_dataset


def add_bundle_arguments(parser: argparse.ArgumentParser, layout_default: str | None) -> None:
    """``--layout`` and the bundle's naming: ``--case-prefix``, ``--nnunet-id``, ``--nnunet-name``."""
    parser.add_argument("--layout", choices=[layout.value for layout in BundleLayout], default=layout_default)
    parser.add_argument("--case-prefix", help="case-id prefix (default BraTSSyn, BraTS-SYN in brats2023)")
    parser.add_argument("--nnunet-id", type=int, help="nnunet layout: dataset id 1-999 (default 901)")
    parser.add_argument("--nnunet-name", help="nnunet layout: dataset name (default MRISynth)")


def bundle_options(args: argparse.Namespace, **fields: Any) -> BundleOptions:
    """The bundle options of the parsed arguments (with the structural maps and brain masks), plus ``fields``.

    Raises:
        ValueError: ``--nnunet-id`` or ``--nnunet-name`` without ``--layout nnunet``, or an invalid value.
    """
    layout = BundleLayout(args.layout)
    if layout != BundleLayout.NNUNET and (args.nnunet_id is not None or args.nnunet_name is not None):
        raise ValueError(f"--nnunet-id and --nnunet-name apply to --layout nnunet only, not {layout.value}")
    return BundleOptions(
        layout=layout,
        extras=True,
        nnunet=nnunet_dataset(args.nnunet_id, args.nnunet_name),
        case_prefix=args.case_prefix,
        **fields,
    )
