import pytest


def pytest_addoption(parser):
    parser.addoption("--nanochat-binary", default="build/release/src/nanochat",
                     help="the nanochat command, to compare the module with")


@pytest.fixture(scope="session")
def binary(request):
    return request.config.getoption("--nanochat-binary")
