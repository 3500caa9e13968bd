import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance (127.0.0.1 only) shared by the pipeline tests."""
    from pipelines.ray_local import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
