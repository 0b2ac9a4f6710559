import pytest

from raddiag.run import RunFolder


def test_text_encoder_is_recorded_and_found(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    assert run.text_encoder() is None                       # nothing recorded: the packaged default
    run.record_text_encoder(None)
    assert run.text_encoder() is None
    enc = tmp_path / "enc"
    enc.mkdir()
    run.record_text_encoder(enc)
    assert run.text_encoder() == enc.resolve()
    run.text_encoder_dir.mkdir()                            # a copy inside the run wins
    assert run.text_encoder() == run.text_encoder_dir
    run.text_encoder_dir.rmdir()
    enc.rmdir()
    with pytest.raises(FileNotFoundError, match="which is gone"):
        run.text_encoder()


def test_check_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder does not exist"):
        RunFolder(tmp_path / "nope").check()
    run = RunFolder(tmp_path / "r").create()
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        run.check()
