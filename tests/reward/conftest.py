import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reward tests run small tensors: on a busy 2-core machine, waking a second OpenMP
    thread costs more than an op (a 2000-element logsigmoid: 15 ms with two, 0.01 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def scores_after_reload(tmp_path):
    """f(model, clips, original_net_dir): the model's scores after saving it, deleting the
    frozen net it was built from, and loading it again (a registered model is self-contained)."""
    import shutil

    from reward.scoring.reward_model import load_reward_model

    def reload(model, clips, original_net_dir):
        model.save(tmp_path / "saved_model")
        shutil.rmtree(original_net_dir)
        return load_reward_model(tmp_path / "saved_model").score(clips)

    return reload
