"""The site tag map loader: the shipped profiles load, and every error names the file and the line to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.plant.tag_map import (
    NodeRef,
    TagMapError,
    load_tag_map,
    match_path,
    parse_node_ref,
    render,
)

ROOT = Path(__file__).resolve().parents[3]
PROFILES = ROOT / "config" / "plant"

GOOD = """\
name = "test site"

[namespaces]
kep = "KEPServerEX"

[[tags]]
folder = "kep:Mixing"
path = "*/MotorCurrent"
tag = "Mixers/{1}/MotorCurrentA"
"""


def test_the_shipped_profiles_load() -> None:
    ours = load_tag_map(PROFILES / "drymix-simulator.toml")
    assert ours.spec.namespaces == {"plant": "urn:drymix:plant"}
    assert ours.batches is not None and ours.batches.kind == "ring" and ours.batches.counter == "Counter"
    assert set(ours.folders) == {"Plant/Mixers", "Plant/Silos", "Plant/Dryer"}
    kepware = load_tag_map(PROFILES / "kepware.toml")
    assert kepware.batches is None and kepware.ignored("Mixing/Mixer1/_System/_Error")
    assert any(r.node == NodeRef("KEPServerEX", "s", "Dryer.Dryer1.SandTemp") for r in kepware.rules)
    s7 = load_tag_map(PROFILES / "s7-1500.toml")
    assert s7.batches is not None and s7.batches.kind == "structure" and s7.batches.fields["seq"] == "BatchCount"
    assert NodeRef("http://www.siemens.com/simatic-s7-opcua", "s", '"DB_Mixer1"."MotorCurrent"') in [r.node for r in s7.rules]


def test_patterns_capture_their_wildcard_steps_and_templates_use_them() -> None:
    assert match_path("*/MotorCurrent", "Mixer1/MotorCurrent") == ["Mixer1"]
    assert match_path("*/Scales/*/ActualKg", "M2/Scales/Cement/ActualKg") == ["M2", "Cement"]
    assert match_path("*/MotorCurrent", "Mixer1/State") is None
    assert match_path("**/Level", "Area1/Silo3/Level") == ["Area1/Silo3"]
    assert match_path("DB_Silo*/Level", "DB_Silo2/Level") == ["DB_Silo2"]
    assert match_path("AnalogIn/AI_00?", "AnalogIn/AI_007") == ["AI_007"]
    assert render("Mixers/{1}/Scales/{2}/ActualKg", ["M2", "Cement"], "ActualKg") == "Mixers/M2/Scales/Cement/ActualKg"
    assert render("Dryer/{0}", [], "SandTemp") == "Dryer/SandTemp"


def test_node_ids_name_their_namespace_by_alias_or_uri_string_or_numeric() -> None:
    namespaces = {"kep": "KEPServerEX"}
    assert parse_node_ref("kep:i=1051", namespaces) == NodeRef("KEPServerEX", "i", "1051")
    assert parse_node_ref("nsu=http://x/;s=\"DB\".\"m\"", namespaces) == NodeRef("http://x/", "s", '"DB"."m"')
    assert parse_node_ref("i=2253", namespaces) == NodeRef(None, "i", "2253")
    with pytest.raises(ValueError, match="by index"):
        parse_node_ref("ns=2;s=Channel1.Device1.Tag1", namespaces)
    with pytest.raises(ValueError, match="alias 'other'"):
        parse_node_ref("other:s=X", namespaces)
    with pytest.raises(ValueError, match="needs a number"):
        parse_node_ref("kep:i=abc", namespaces)


# Each broken map marks the line the error must name with "# <-- here".
BROKEN: dict[str, tuple[str, str]] = {
    "toml syntax": (GOOD + 'unit = "A  # <-- here (an unterminated string)\n', "not valid TOML"),
    "unknown kind": (GOOD + 'kind = "analogue"  # <-- here\n', "kind: Input should be"),
    "node id by index": (GOOD + '\n[[tags]]\nnode_id = "ns=2;s=Mixing.Mixer1.State"  # <-- here\ntag = "Mixers/Mixer1/State"\n', "by index"),
    "unknown alias in a node id": (GOOD + '\n[[tags]]\ntag = "X"\nnode_id = "plc:s=X"  # <-- here\n', "alias 'plc'"),
    "unknown alias in a folder": (GOOD.replace('folder = "kep:Mixing"', 'folder = "opc:Mixing"  # <-- here'), "alias 'opc'"),
    "placeholder beyond the wildcards": (GOOD.replace('tag = "Mixers/{1}/MotorCurrentA"', 'tag = "Mixers/{2}/MotorCurrentA"  # <-- here'),
                                         "uses {2} but the rule has 1 wildcard"),
    "a rule without its tag": (GOOD + '\n[[tags]]  # <-- here\nnode_id = "kep:i=12"\n', "tags[1].tag: Field required"),
    "both a pattern and a node id": (GOOD + '\n[[tags]]  # <-- here\nfolder = "kep:A"\npath = "*"\nnode_id = "kep:i=12"\ntag = "{1}"\n',
                                     "either `folder` + `path`"),
    "deadband on a read tag": (GOOD + 'deadband = "percent"  # <-- here\ndeadband_value = 1.0\n', "sampling = \"subscription\" only"),
    "unknown top-level key": ('nmae = "typo"  # <-- here\n' + GOOD, "nmae: Extra inputs are not permitted"),
    "wildcard in a folder": (GOOD.replace('folder = "kep:Mixing"', 'folder = "kep:Mix*"  # <-- here'), "wildcards belong in `path`"),
    "ring without its seq field": (
        GOOD + '\n[batches]\nkind = "ring"\nfolder = "kep:Batches"\ncounter = "Counter"\nrecords = "Records"\n\n'
        '[batches.fields]  # <-- here\nbatch_id = "BatchId"\nstarted_at = "Start"\nended_at = "End"\n',
        "needs the field(s) seq",
    ),
    "an unknown batch field": (
        GOOD + '\n[batches]\nkind = "structure"\nfolder = "kep:DB"\n\n[batches.fields]  # <-- here\nbatch_id = "B"\n'
        'started_at = "S"\nended_at = "E"\nweight = "W"\n',
        "unknown batch field(s) weight",
    ),
    "an unknown batch kind": (GOOD + '\n[batches]\nkind = "journal"  # <-- here\nfolder = "kep:E"\nfields = {}\n', "batches.kind"),
    "events without their event type": (GOOD + '\n[batches]  # <-- here\nkind = "events"\nfolder = "Server"\nfields = { batch_id = "BatchId" }\n',
                                        "events need `event_type`"),
    "event fields are not node ids": (GOOD + '\n[batches]\nkind = "events"\nfolder = "Server"\nevent_type = "kep:i=5000"\n'
                                      'fields = { batch_id = "kep:s=X" }  # <-- here\n', "events fields are browse names (of the event)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_every_error_names_the_file_and_the_line(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "site.toml"
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "# <-- here" in row)
    with pytest.raises(TagMapError) as info:
        load_tag_map(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert expected in message, message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(GOOD + 'kind = "analogue"\n\n[[tags]]\nnode_id = "ns=3;i=7"\ntag = "T"\n')
    with pytest.raises(TagMapError) as info:
        load_tag_map(path)
    assert len(info.value.problems) == 1  # pydantic stops at the shape; the shape error comes first
    path.write_text(GOOD + '\n[[tags]]\nnode_id = "ns=3;i=7"\ntag = "T"\n\n[[tags]]\nnode_id = "zz:i=8"\ntag = "U"\n')
    with pytest.raises(TagMapError) as info:
        load_tag_map(path)
    # lines 12 and 16: the two node_id keys (GOOD is 9 lines)
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{path}:12", f"{path}:16"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TagMapError, match="nowhere.toml: cannot be read"):
        load_tag_map(tmp_path / "nowhere.toml")


def test_a_broken_configured_map_is_a_configuration_error_that_is_not_retried(tmp_path: Path) -> None:
    from connectors.core.errors import ErrorCategory, IntegrationError
    from connectors.plant import PlantConnector
    from hub.core.settings import plant_opcua_config, reset_settings_cache

    path = tmp_path / "site.toml"
    path.write_text(GOOD + 'sampling = "sometimes"\n')
    reset_settings_cache()
    config = plant_opcua_config().model_copy(update={"tag_map": path})
    with pytest.raises(IntegrationError) as info:
        PlantConnector(config)
    assert info.value.category == ErrorCategory.INVALID_REQUEST and info.value.code == "TAG_MAP_INVALID"
    assert not info.value.transient and f"{path}:10:" in info.value.message
