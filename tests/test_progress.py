"""Progress into a log (not a terminal): a line every tenth of the work, never carriage returns."""

from perennial.progress import progress


def test_a_line_every_tenth_into_a_pipe(capsys):
    bar = progress(range(1000), desc="training", unit="step")
    for i in bar:
        if i % 100 == 0:
            bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 10
    assert lines[0].startswith("training:  10% 100/1000") and "step/s" in lines[0] and "loss=" in lines[0]
    assert lines[-1].startswith("training: 100% 1000/1000")


def test_a_resumed_or_stopped_run_says_where_it_ended(capsys):
    bar = progress(total=50, initial=20, desc="learning")
    for _ in range(7):
        bar.update()
    bar.close()
    bar.close()  # closing twice prints once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("learning:  50% 25/50")
    assert lines[1].startswith("learning:  54% 27/50")


def test_disabled_prints_nothing(capsys):
    for _ in progress(range(10), enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_transient_progress_writes_nothing_into_a_log(capsys):
    for _ in progress(range(10), desc="decoding", leave=False):
        pass
    assert capsys.readouterr().err == ""
