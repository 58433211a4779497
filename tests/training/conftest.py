import pytest

from folio.training import trainer as trainer_module


@pytest.fixture
def no_curve_picture(monkeypatch):
    """Skip the loss-curve PNG a finished run draws (matplotlib: a second or more per run on a busy machine).
    Returns the drawing function, for a test that checks the picture to put back."""
    draw = trainer_module.plot_curves
    monkeypatch.setattr(trainer_module, "plot_curves", lambda *args, **kwargs: None)
    return draw
