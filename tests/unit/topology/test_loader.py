"""The loader: environment expansion, merging files, and hostile YAML."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rabbitflow.errors import TopologyError
from rabbitflow.topology import load_text, load_topology
from rabbitflow.topology.source import MAX_FILE_BYTES

ORDERS = """\
version: 1
exchanges:
  orders: {type: topic}
queues:
  billing:
    bind: [{exchange: orders, routing_key: order.placed}]
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(exc: pytest.ExceptionInfo[TopologyError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


class TestEnvironmentExpansion:
    def test_a_variable_is_read_as_the_fields_type(self) -> None:
        text = "version: 1\nqueues:\n  jobs:\n    max_length: '${N}'\n    durable: ${D}\n"
        topology = load_text(text, environ={"N": "5", "D": "false"})
        # A quoted scalar stays a string, which pydantic still reads as an int.
        assert topology.queues["jobs"].max_length == 5
        assert topology.queues["jobs"].durable is False

    def test_a_plain_scalar_becomes_an_int(self) -> None:
        text = "version: 1\nqueues:\n  jobs:\n    max_length: ${N}\n"
        assert load_text(text, environ={"N": "42"}).queues["jobs"].max_length == 42

    def test_default_applies_when_unset_or_empty(self) -> None:
        text = "version: 1\nqueues:\n  ${PREFIX:-app}.jobs: {message_ttl: '${TTL:-5s}'}\n"
        topology = load_text(text, environ={"TTL": ""})
        assert topology.queues["app.jobs"].message_ttl == 5000

    def test_names_are_expanded(self) -> None:
        text = "version: 1\nexchanges:\n  ${ENV}.orders: {type: topic}\n"
        assert set(load_text(text, environ={"ENV": "prod"}).exchanges) == {"prod.orders"}

    def test_unset_variable_without_default_is_named(self) -> None:
        with pytest.raises(TopologyError) as caught:
            load_text("version: 1\nqueues:\n  jobs:\n    max_length: ${MISSING}\n", environ={})
        assert _problems(caught) == [
            "<string>:4:17: queues.jobs.max_length: environment variable MISSING is not set "
            "(set it, or write ${MISSING:-default})"
        ]


class TestMergingFiles:
    def test_objects_of_several_files_are_merged(self, tmp_path: Path) -> None:
        a = _write(tmp_path, "a.yaml", ORDERS)
        b = _write(
            tmp_path,
            "b.yaml",
            "version: 1\nqueues:\n  audit:\n    bind: [{exchange: orders, routing_key: '#'}]\n",
        )
        topology = load_topology([a, b])
        assert set(topology.queues) == {"billing", "audit"}

    def test_an_identical_duplicate_is_accepted(self, tmp_path: Path) -> None:
        a = _write(tmp_path, "a.yaml", ORDERS)
        b = _write(tmp_path, "b.yaml", ORDERS)
        assert set(load_topology([a, b]).exchanges) == {"orders"}

    def test_a_differing_duplicate_names_both_files(self, tmp_path: Path) -> None:
        a = _write(tmp_path, "a.yaml", ORDERS)
        b = _write(tmp_path, "b.yaml", "version: 1\nexchanges:\n  orders: {type: fanout}\n")
        with pytest.raises(TopologyError) as caught:
            load_topology([a, b])
        (line,) = _problems(caught)
        assert line.startswith(f"{b}:3:3: exchanges.orders: exchange 'orders' is declared")
        assert f"differently in {a}" in line

    def test_a_reference_may_point_into_another_file(self, tmp_path: Path) -> None:
        b = _write(tmp_path, "b.yaml", "version: 1\nqueues:\n  q: {bind: [{exchange: orders}]}\n")
        with pytest.raises(TopologyError):
            load_topology([b])
        a = _write(tmp_path, "a.yaml", "version: 1\nexchanges:\n  orders: {type: fanout}\n")
        assert "q" in load_topology([a, b]).queues

    def test_no_file_is_an_error(self) -> None:
        with pytest.raises(TopologyError):
            load_topology([])

    def test_a_missing_file_is_one_line(self, tmp_path: Path) -> None:
        with pytest.raises(TopologyError) as caught:
            load_topology(tmp_path / "nope.yaml")
        assert _problems(caught) == [
            f"{tmp_path / 'nope.yaml'}:1:1: cannot read file: No such file or directory"
        ]


class TestHostileYaml:
    def test_python_object_tags_construct_nothing(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        text = f"version: 1\nqueues:\n  q: !!python/object/apply:os.system ['touch {marker}']\n"
        with pytest.raises(TopologyError) as caught:
            load_text(text)
        assert "is not allowed" in _problems(caught)[0]
        assert not marker.exists()

    def test_python_name_tag_in_a_key_is_refused(self) -> None:
        with pytest.raises(TopologyError):
            load_text("version: 1\n!!python/name:os.system : 1\n")

    def test_an_alias_bomb_is_refused_fast(self) -> None:
        lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        for i in range(1, 12):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
        started = time.process_time()
        with pytest.raises(TopologyError) as caught:
            load_text("version: 1\n" + "\n".join(lines) + "\n")
        assert time.process_time() - started < 2
        assert "alias bomb" in _problems(caught)[0]

    def test_a_huge_file_is_refused_before_parsing(self, tmp_path: Path) -> None:
        huge = _write(tmp_path, "huge.yaml", "version: 1\n" + "#" * (MAX_FILE_BYTES + 1))
        started = time.process_time()
        with pytest.raises(TopologyError) as caught:
            load_topology(huge)
        assert time.process_time() - started < 1
        assert "limited to" in _problems(caught)[0]

    @pytest.mark.parametrize("levels", [200, 50_000])
    def test_deep_nesting_is_refused_fast(self, levels: int) -> None:
        # CPU time, not wall time: a loaded 2-core machine can stall the process for
        # seconds (3.2 s seen at load 9), while refusing costs ~0.1 s of CPU.
        started = time.process_time()
        with pytest.raises(TopologyError) as caught:
            load_text("version: 1\nx: " + "[" * levels + "]" * levels + "\n")
        assert time.process_time() - started < 2
        assert _problems(caught) == [
            "<string>:2:67: document refused: nested more than 64 levels deep"
        ]


class TestNestedAndEmptyVariables:
    def test_a_default_may_hold_a_reference(self) -> None:
        text = "version: 1\nqueues:\n  ${A:-${B:-x.${C:-c}}}.q: {}\n"
        assert set(load_text(text, environ={}).queues) == {"x.c.q"}
        assert set(load_text(text, environ={"B": "b"}).queues) == {"b.q"}
        assert set(load_text(text, environ={"A": "a"}).queues) == {"a.q"}

    def test_an_unset_inner_variable_is_named_not_kept_as_text(self) -> None:
        with pytest.raises(TopologyError) as caught:
            load_text("version: 1\nqueues:\n  ${A:-${UX_SET_B}}: {}\n", environ={})
        assert _problems(caught) == [
            "<string>:3:3: queues: environment variable UX_SET_B is not set "
            "(set it, or write ${UX_SET_B:-default})"
        ]

    def test_an_empty_variable_for_a_typed_field_is_an_error(self) -> None:
        with pytest.raises(TopologyError) as caught:
            load_text("version: 1\nqueues:\n  jobs:\n    max_length: ${N}\n", environ={"N": ""})
        assert _problems(caught) == [
            "<string>:4:17: queues.jobs.max_length: ${N} expands to an empty value; set the "
            "variable, give a default, or quote it for an empty string"
        ]

    def test_a_quoted_empty_variable_stays_an_empty_string(self) -> None:
        text = (
            "version: 1\nqueues:\n  jobs:\n    bind: [{exchange: amq.topic, routing_key: '${K}'}]\n"
        )
        topology = load_text(text, environ={"K": ""})
        assert topology.queues["jobs"].bind[0].routing_key == ""
