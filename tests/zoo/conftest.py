import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_addoption(parser):
    parser.addoption("--nanochat-binary", required=True, help="the nanochat binary under test")
