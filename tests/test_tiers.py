"""Every test has exactly one tier, and a unit test never starts the services: checked on
small pytest sessions of their own that run this suite's hooks (tests/conftest.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

# The suite's hooks, and a `services` that leaves a trace when it starts.
CONFTEST = """
from pathlib import Path

import pytest

from tests.conftest import pytest_collection_modifyitems, pytest_runtest_setup  # noqa: F401 - the hooks under test


@pytest.fixture(scope="session")
def services():
    Path("services-started").touch()
    return "endpoints"


@pytest.fixture
def settings(services):
    return services
"""


@pytest.fixture
def session(pytester: pytest.Pytester, pytestconfig: pytest.Config) -> pytest.Pytester:
    markers = "\n".join(f"    {m}" for m in pytestconfig.getini("markers"))
    # without the plugins that re-import hypothesis and anyio in every session (~1 s each)
    options = "--strict-markers -p no:cacheprovider -p no:hypothesispytest -p no:anyio"
    pytester.makeini(f"[pytest]\naddopts = {options}\nmarkers =\n{markers}\n")
    pytester.makeconftest(CONFTEST)
    return pytester


def test_a_test_without_a_tier_or_with_two_stops_the_session(session: pytest.Pytester) -> None:
    session.makepyfile(test_some="""
        import pytest

        def test_untiered():
            pass

        @pytest.mark.unit
        @pytest.mark.e2e
        def test_twice():
            pass

        @pytest.mark.unit
        def test_fine():
            pass
    """)
    for args in ((), ("-m", "unit")):  # checked before `-m` deselects
        result = session.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*exactly one tier marker*",
                                     "*test_some.py::test_untiered: no tier",
                                     "*test_some.py::test_twice: e2e, unit"])
        assert "test_fine" not in result.stderr.str()


def test_a_module_mark_gives_every_test_its_tier(session: pytest.Pytester) -> None:
    session.makepyfile(test_some="""
        import pytest

        pytestmark = pytest.mark.integration

        def test_one(settings):
            assert settings == "endpoints"

        def test_two():
            pass
    """)
    session.runpytest().assert_outcomes(passed=2)


def test_a_unit_test_asking_for_the_services_fails_before_they_start(session: pytest.Pytester) -> None:
    session.makepyfile(test_some="""
        import pytest

        @pytest.mark.unit
        def test_direct(services):
            pass

        @pytest.mark.unit
        def test_through_settings(settings):
            pass

        @pytest.mark.unit
        def test_pure():
            pass

        @pytest.mark.integration
        def test_real(settings):
            assert settings == "endpoints"
    """)
    result = session.runpytest("-m", "unit")
    result.assert_outcomes(passed=1, errors=2, deselected=1)
    result.stdout.fnmatch_lines(["*a unit test may not use the `services` fixture*"])
    assert not (session.path / "services-started").exists()

    session.runpytest("-m", "integration").assert_outcomes(passed=1, deselected=3)
    assert (session.path / "services-started").exists()  # the control: the fixture does start
