"""The network topology and its checks (services/common/topology.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.topology import Node, Topology, load_topology

REPO = Path(__file__).resolve().parents[2]


def topology_dict() -> dict:
    return copy.deepcopy({
        "network": {"prefecture_tier": True},
        "prefectures": [{"code": "13", "name": "東京都"}, {"code": "27", "name": "大阪府"}],
        "municipalities": [
            {"code": "131016", "name": "千代田区", "prefecture": "13"},
            {"code": "131130", "name": "渋谷区", "prefecture": "13"},
            {"code": "272035", "name": "豊中市", "prefecture": "27"},
        ],
        "agencies": [
            {"id": "pension-service", "name": "日本年金機構", "level": "national", "affairs": ["pension-benefits", "national-pension"]},
            {"id": "tokyo-police-license", "name": "警視庁", "level": "prefectural", "prefecture": "13", "affairs": ["pref-driver-license"]},
        ],
    })


def with_municipality(**fields) -> dict:
    data = topology_dict()
    data["municipalities"].append(fields)
    return data


def with_agency(**fields) -> dict:
    data = topology_dict()
    data["agencies"].append(fields)
    return data


def refused(data: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Topology.model_validate(data)


# --- the deployed topology -----------------------------------------------------------------------

def test_deployed_topology_loads():
    topology = load_topology(REPO / "deploy" / "topology.yaml")
    assert topology.network.prefecture_tier is True
    assert {p.code for p in topology.prefectures} == {"13", "27"}
    assert topology.municipality("131016").name == "千代田区"
    assert topology.municipality("131017") is None
    assert topology.agency("pension-service").affairs == ("pension-benefits", "national-pension")
    assert topology.agency("tokyo-police-license").prefecture == "13"
    assert topology.agency("nobody") is None
    assert topology.upstream_of_cs("272035") == "prefecture_server.27"


def test_deployed_topology_nodes():
    topology = load_topology(REPO / "deploy" / "topology.yaml")
    ids = [n.id for n in topology.nodes]
    assert ids[:2] == ["provision_log.provision_log", "national_server.national"]
    assert "prefecture_server.13" in ids and "cs_gateway.131016" in ids and "municipal_rrs.272035" in ids
    assert len(ids) == len(set(ids)) == 2 + 2 + 3 + 3
    assert ids.index("cs_gateway.131016") < ids.index("municipal_rrs.131016")


def test_without_prefecture_tier_cs_sends_to_national():
    data = topology_dict()
    data["network"]["prefecture_tier"] = False
    topology = Topology.model_validate(data)
    assert topology.upstream_of_cs("131016") == "national_server.national"
    assert not any(n.kind == "prefecture_server" for n in topology.nodes)


def test_prefecture_node_is_the_prefecture_server_or_else_the_national_server():
    data = topology_dict()
    with_tier = Topology.model_validate(data)
    assert (with_tier.prefecture_node("13").id, with_tier.prefecture_node("13").database, with_tier.prefecture_node("13").party) == ("prefecture_server.13", "pref_13", "pref-13")
    data["network"]["prefecture_tier"] = False
    flat = Topology.model_validate(data)
    assert (flat.prefecture_node("13").id, flat.prefecture_node("13").database, flat.prefecture_node("13").party) == ("national_server.national", "national", "national")


def test_agencies_get_tokens_for_the_provider_that_serves_them(tmp_path):
    from services.network import Network

    with_tier = Network(root=tmp_path / "a", topology_path=REPO / "deploy" / "topology.yaml")
    flat = Network(root=tmp_path / "b", topology_path=REPO / "deploy" / "topology-without-prefectures.yaml")
    assert [with_tier.provider_for(a) for a in ("pension-service", "tokyo-police-license", "osaka-welfare")] == ["national", "pref-13", "pref-27"]
    assert [flat.provider_for(a) for a in ("pension-service", "tokyo-police-license", "osaka-welfare")] == ["national", "national", "national"]


def test_a_misdirected_agency_is_told_where_its_affair_is_served():
    from contracts.affairs import Level
    from services.common.provision import ProvisionRefused, authorise

    data = topology_dict()
    with_tier = Topology.model_validate(data)
    with pytest.raises(ProvisionRefused, match=r"prefecture_server\.13 \(token audience 'pref-13'\)") as refused:
        authorise(with_tier, agency_id="tokyo-police-license", affair_id="pref-driver-license", fields=None, level=Level.national, prefecture=None)
    assert refused.value.slug == "wrong-provider"
    with pytest.raises(ProvisionRefused, match="national_server.national"):
        authorise(with_tier, agency_id="pension-service", affair_id="pension-benefits", fields=None, level=Level.prefectural, prefecture="13")
    data["network"]["prefecture_tier"] = False
    flat = Topology.model_validate(data)
    with pytest.raises(ProvisionRefused, match=r"national_server\.national \(token audience 'national'\)"):
        authorise(flat, agency_id="tokyo-police-license", affair_id="pref-driver-license", fields=None, level=Level.national, prefecture=None)
    # served at prefectural level for its own prefecture only
    assert authorise(flat, agency_id="tokyo-police-license", affair_id="pref-driver-license", fields=None, level=Level.prefectural, prefecture="13").agency.id == "tokyo-police-license"
    with pytest.raises(ProvisionRefused, match="wrong-provider|not served here"):
        authorise(flat, agency_id="tokyo-police-license", affair_id="pref-driver-license", fields=None, level=Level.prefectural, prefecture="27")


def test_the_test_topology_is_valid():
    Topology.model_validate(topology_dict())


@pytest.mark.parametrize(
    "kind, tenant, database, party",
    [
        ("municipal_rrs", "131016", "rrs_131016", "rrs-131016"),
        ("cs_gateway", "131016", "cs_131016", "cs-131016"),
        ("prefecture_server", "13", "pref_13", "pref-13"),
        ("national_server", "national", "national", "national"),
        ("provision_log", "provision_log", "provlog", "provision-log"),
    ],
)
def test_node_names(kind, tenant, database, party):
    node = Node(kind=kind, tenant=tenant)
    assert node.id == f"{kind}.{tenant}"
    assert node.database == database
    assert node.party == party


# --- municipalities ------------------------------------------------------------------------------

def test_municipality_code_with_wrong_check_digit_refused():
    refused(with_municipality(code="131137", name="渋谷区", prefecture="13"), "check digit")
    data = topology_dict()
    data["municipalities"][0]["code"] = "131010"
    refused(data, "check digit")


def test_municipality_code_not_in_japan_post_data_refused():
    # 13999 with its correct check digit: well-formed, but no such municipality
    refused(with_municipality(code="139998", name="架空区", prefecture="13"), "Japan Post")


def test_municipality_name_that_does_not_match_refused():
    refused(with_municipality(code="131024", name="渋谷区", prefecture="13"), "not 渋谷区")  # 131024 is 中央区


def test_municipality_full_name_and_county_accepted():
    Topology.model_validate(with_municipality(code="133035", name="瑞穂町", prefecture="13"))  # 西多摩郡瑞穂町
    Topology.model_validate(with_municipality(code="131024", name="東京都中央区", prefecture="13"))


@pytest.mark.parametrize("name", ["代田区", "区", ""])
def test_truncated_municipality_name_refused(name):
    data = topology_dict()
    data["municipalities"][0]["name"] = name
    refused(data, "not")


def test_municipality_in_the_wrong_prefecture_refused():
    refused(with_municipality(code="272035", name="豊中市", prefecture="13"), "not in prefecture")


def test_municipality_of_an_undeclared_prefecture_refused():
    refused(with_municipality(code="011011", name="札幌市中央区", prefecture="01"), "not declared")


def test_duplicate_municipality_refused():
    refused(with_municipality(code="131016", name="千代田区", prefecture="13"), "duplicate municipality")


def test_unknown_fields_refused():
    data = topology_dict()
    data["municipalities"][0]["population"] = 66680
    refused(data, "Extra inputs")


# --- agencies ------------------------------------------------------------------------------------

def test_agency_with_unknown_affair_refused():
    refused(with_agency(id="tax-office", name="国税庁", level="national", affairs=["income-tax"]), "unknown affair income-tax")


def test_agency_with_affair_of_the_wrong_level_refused():
    # a national agency for a prefectural affair, and the other way round
    refused(with_agency(id="npa", name="警察庁", level="national", affairs=["pref-driver-license"]), "affair pref-driver-license is prefectural")
    refused(with_agency(id="osaka-pension", name="大阪府", level="prefectural", prefecture="27", affairs=["national-pension"]), "affair national-pension is national")


def test_prefectural_agency_must_name_its_prefecture_and_national_must_not():
    refused(with_agency(id="osaka-welfare", name="大阪府 福祉部", level="prefectural", affairs=["pref-disability-certificate"]), "prefectural agencies")
    refused(with_agency(id="mofa", name="外務省", level="national", prefecture="13", affairs=["passport-issuance"]), "prefectural agencies")


def test_agency_of_an_undeclared_prefecture_refused():
    refused(with_agency(id="hokkaido-license", name="北海道警察", level="prefectural", prefecture="01", affairs=["pref-driver-license"]), "not declared")


@pytest.mark.parametrize("agency_id", ["Pension", "x", "-pension", "pension service", "年金機構"])
def test_agency_id_pattern(agency_id):
    refused(with_agency(id=agency_id, name="機関", level="national", affairs=["passport-issuance"]), "String should match pattern")


def test_duplicate_agency_refused():
    refused(with_agency(id="pension-service", name="日本年金機構", level="national", affairs=["pension-benefits"]), "duplicate agency")


def test_duplicate_prefecture_refused():
    data = topology_dict()
    data["prefectures"].append({"code": "13", "name": "東京都"})
    refused(data, "duplicate prefecture")


def test_load_topology_refuses_a_bad_file(tmp_path):
    bad = tmp_path / "topology.yaml"
    bad.write_text(
        "prefectures: [{code: '13', name: 東京都}]\n"
        "municipalities: [{code: '131017', name: 千代田区, prefecture: '13'}]\n"
        "agencies: []\n",
        encoding="utf-8",
    )
    with pytest.raises(ValidationError, match="check digit"):
        load_topology(bad)
