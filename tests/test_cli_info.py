import json

from spikevimformer.cli import main


def test_info_prints_exact_counts(capsys):
    assert main(["info", "--image-size", "384"]) == 0
    out = capsys.readouterr().out
    assert "9,782,112" in out and "18,626,504" in out
    assert "14.271" in out and "24.901" in out  # (QK^T)V-order GMACs at 384


def test_info_json_and_forward(capsys):
    assert main(["info", "--image-size", "64", "--forward", "--json", "--device", "cpu"]) == 0
    payload = json.loads(capsys.readouterr().out)
    dims = {row["variant"]: row["descriptor_dim"] for row in payload["variants"]}
    assert dims == {"tiny": 240, "small": 360}
    shapes = {c["variant"]: c["shape"] for c in payload["forward"]}
    assert shapes == {"tiny": [2, 240], "small": [2, 360]}


def test_bad_image_size_is_a_clean_error(capsys):
    import pytest

    with pytest.raises(SystemExit) as info:  # refused by the argument parser, before any work
        main(["info", "--image-size", "70", "--forward", "--device", "cpu"])
    assert info.value.code == 2 and "multiple of 16" in capsys.readouterr().err


def test_threads_flag_sets_torch_threads_and_refuses_zero(capsys):
    import pytest
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["--threads", "1", "info", "--image-size", "64"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["--threads", "0", "info"])
    assert "must be at least 1" in capsys.readouterr().err
