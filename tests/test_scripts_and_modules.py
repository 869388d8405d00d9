"""Scripts import modules, never another script; the decoding flags are declared once and travel as one
Decoding value; every function of the scripts and modules stays within tools/check_layout.py's limits."""
import ast
from pathlib import Path

import pytest

import demo
import evaluate
import inference
from captioning import Decoding, generate_batch
from tools import check_layout

REPO = Path(__file__).resolve().parent.parent
# Library modules that also carry a small inspection command line: importing them is importing a module.
MODULES_WITH_A_CLI = {"dataset", "checkpoint"}
# download_dataset.py's hidden --synthetic flag, an old spelling, hands the whole run over to synthetic.py's main.
HAND_OVERS = {"download_dataset.py": ["synthetic"]}


def imported_names(path: Path) -> set:
    """The top-level names a file imports, at any depth (imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_script_imports_another_script():
    scripts = {path.stem for path in REPO.glob("*.py")
               if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")} - MODULES_WITH_A_CLI
    assert {"encode", "inference", "demo", "curves", "train", "evaluate"} <= scripts
    imports = {path.name: sorted(imported_names(path) & (scripts - {path.stem})) for path in REPO.glob("*.py")}
    assert {name: found for name, found in imports.items() if found} == HAND_OVERS


def test_old_import_paths_still_work():
    import curves
    import encode
    import latents
    import training_curves

    assert encode.encode_videos is latents.encode_videos and encode.split_features is latents.split_features
    assert curves.plot_curves is training_curves.plot_curves
    assert inference.caption_video.__module__ == "captioning"


@pytest.mark.parametrize("script, argv", [(inference, ["--video_path", "x.mp4"]), (demo, []), (evaluate, [])])
def test_every_script_parses_the_defaults_into_one_decoding(script, argv):
    defaults = Decoding.from_args(script.parse_args(argv))
    assert defaults == (Decoding(num_captions=3) if script is demo else Decoding())


def test_the_decoding_flags_are_declared_where_they_apply():
    flags = ["--video_path", "x.mp4", "--beam_size", "2", "--max_len", "7", "--length_penalty", "0",
             "--num_captions", "2", "--sample", "--temperature", "0.5", "--top_p", "0.9", "--seed", "3"]
    assert Decoding.from_args(inference.parse_args(flags)) == Decoding(2, 7, 0.0, 2, True, 0.5, 0.9, 3)
    # evaluate.py captions by beam search, one caption per video; demo.py shows beams, never samples.
    assert Decoding.from_args(evaluate.parse_args(["--beam_size", "1", "--max_len", "9"])) == Decoding(1, 9)
    for script, flag in ((evaluate, "--sample"), (evaluate, "--num_captions"), (demo, "--temperature")):
        with pytest.raises(SystemExit):
            script.parse_args([flag, "1"] if flag != "--sample" else [flag])


def test_one_decoding_value_gives_beams_or_seeded_samples():
    import torch

    from model import CaptionDecoder, DecoderConfig

    class Letters:  # a tokenizer that spells ids
        def decode(self, ids):
            return " ".join(str(token) for token in ids)

    torch.manual_seed(0)
    decoder = CaptionDecoder(DecoderConfig(vocab_size=12, latent_dim=8, embed_dim=8, hidden_dim=16, num_layers=1)).eval()
    features = torch.randn(2, 8)  # (B, D)
    beams = generate_batch(decoder, Letters(), features, Decoding(beam_size=3, num_captions=2, max_len=5))
    assert [len(video) for video in beams] == [2, 2]
    assert all(first["score"] >= second["score"] for first, second in beams)
    sampled = Decoding(num_captions=3, sample=True, max_len=5, seed=4)
    draws = generate_batch(decoder, Letters(), features, sampled)
    assert draws == generate_batch(decoder, Letters(), features, sampled)  # same seed, same captions
    assert all(item["score"] is None for video in draws for item in video) and [len(v) for v in draws] == [3, 3]


def test_scripts_and_modules_are_within_the_layout_limits(capsys):
    assert check_layout.main(check_layout.parse_args(["--root", str(REPO)])) == 0, capsys.readouterr().out
