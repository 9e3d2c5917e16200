"""The network's topology: prefectures, municipalities, agencies and their affairs.

Loaded from a YAML file (``deploy/topology.yaml``). Every municipality code is
checked for its check digit and against Japan Post's data, so a typo cannot
create a municipality that does not exist.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.online import ResidenceConfirmation
from contracts.affairs import AFFAIRS, Level
from contracts.identifiers import LocalGovernmentCode, PrefectureCode
from services.common.gazetteer import municipality_names, names_match


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefectureSpec(_Spec):
    code: PrefectureCode
    name: str


class OnlinePolicy(_Spec):
    """What a municipality accepts online (R-ONL-1, R-ONL-3); the defaults are the network's."""

    #: consecutive online-only procedures before an in-person identity check is required
    max_consecutive_online: int = Field(default=2, ge=0, le=20)
    #: years since the last in-person identity check after which one is required again
    in_person_check_years: int = Field(default=5, ge=1, le=10)
    #: how actual residence at a new address may be confirmed
    residence_confirmation: tuple[ResidenceConfirmation, ...] = (ResidenceConfirmation.mailed_code, ResidenceConfirmation.landlord, ResidenceConfirmation.in_person)


class MunicipalitySpec(_Spec):
    code: LocalGovernmentCode
    name: str
    prefecture: PrefectureCode
    online: OnlinePolicy = OnlinePolicy()

    @model_validator(mode="after")
    def _real_municipality(self):
        if self.code[:2] != self.prefecture:
            raise ValueError(f"municipality {self.code} is not in prefecture {self.prefecture}")
        known = municipality_names(self.code[:5])
        if known is None:
            raise ValueError(f"{self.code} is not a local-government code in Japan Post's data")
        if not names_match(self.code[:5], self.name):
            raise ValueError(f"{self.code} is {''.join(known)}, not {self.name or '(empty)'}")
        return self


class AgencySpec(_Spec):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,38}$")
    name: str
    level: Level
    prefecture: PrefectureCode | None = None
    affairs: tuple[str, ...]

    @model_validator(mode="after")
    def _affairs_exist(self):
        for affair_id in self.affairs:
            found = AFFAIRS.get(affair_id)
            if found is None:
                raise ValueError(f"agency {self.id}: unknown affair {affair_id}")
            if found.level is not self.level:
                raise ValueError(f"agency {self.id}: affair {affair_id} is {found.level}, agency is {self.level}")
        if (self.level is Level.prefectural) != (self.prefecture is not None):
            raise ValueError(f"agency {self.id}: prefectural agencies (only) name their prefecture")
        return self


class NetworkSpec(_Spec):
    prefecture_tier: bool = True
    #: per-affair hold window of push notifications, overriding the catalogue's default
    hold_seconds: dict[str, int] = {}

    @model_validator(mode="after")
    def _hold_windows_name_affairs(self):
        for affair_id, seconds in self.hold_seconds.items():
            if affair_id not in AFFAIRS:
                raise ValueError(f"hold_seconds: unknown affair {affair_id}")
            if not 0 <= seconds <= 7 * 24 * 3600:
                raise ValueError(f"hold_seconds: {affair_id} must be between 0 and one week")
        return self


class Topology(_Spec):
    network: NetworkSpec = NetworkSpec()
    prefectures: tuple[PrefectureSpec, ...]
    municipalities: tuple[MunicipalitySpec, ...]
    agencies: tuple[AgencySpec, ...]

    @model_validator(mode="after")
    def _consistent(self):
        prefs = {p.code for p in self.prefectures}
        for m in self.municipalities:
            if m.prefecture not in prefs:
                raise ValueError(f"municipality {m.code}: prefecture {m.prefecture} is not declared")
        for a in self.agencies:
            if a.prefecture is not None and a.prefecture not in prefs:
                raise ValueError(f"agency {a.id}: prefecture {a.prefecture} is not declared")
        for what, ids in (
            ("prefecture", [p.code for p in self.prefectures]),
            ("municipality", [m.code for m in self.municipalities]),
            ("agency", [a.id for a in self.agencies]),
        ):
            if len(ids) != len(set(ids)):
                raise ValueError(f"duplicate {what} in topology")
        return self

    def municipality(self, code: str) -> MunicipalitySpec | None:
        return next((m for m in self.municipalities if m.code == code), None)

    def hold_seconds(self, affair_id: str) -> int:
        return self.network.hold_seconds.get(affair_id, AFFAIRS[affair_id].hold_seconds)

    def agency(self, agency_id: str) -> AgencySpec | None:
        return next((a for a in self.agencies if a.id == agency_id), None)

    @cached_property
    def nodes(self) -> tuple["Node", ...]:
        """Every service process of the network, in start order (consumers last)."""
        nodes: list[Node] = [Node(kind="provision_log", tenant="provision_log"), Node(kind="national_server", tenant="national")]
        if self.network.prefecture_tier:
            nodes += [Node(kind="prefecture_server", tenant=p.code) for p in self.prefectures]
        nodes += [Node(kind="cs_gateway", tenant=m.code) for m in self.municipalities]
        nodes += [Node(kind="municipal_rrs", tenant=m.code) for m in self.municipalities]
        return tuple(nodes)

    def upstream_of_cs(self, municipality_code: str) -> str:
        """The node a CS forwards to: its prefecture server, or the national server without that tier."""
        m = self.municipality(municipality_code)
        assert m is not None
        return self.prefecture_node(m.prefecture).id

    def prefecture_node(self, prefecture: str) -> "Node":
        """The node that holds a prefecture's residents and serves its prefectural affairs (R-NET-4):
        its prefecture server, or the national server when the network has no prefecture tier."""
        if self.network.prefecture_tier:
            return Node(kind="prefecture_server", tenant=prefecture)
        return Node(kind="national_server", tenant="national")


class Node(_Spec):
    kind: str
    tenant: str

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.tenant}"

    @property
    def database(self) -> str:
        """Database and role name of this tenant (one each, never shared)."""
        prefix = {"municipal_rrs": "rrs", "cs_gateway": "cs", "prefecture_server": "pref", "national_server": "national", "provision_log": "provlog"}[self.kind]
        return prefix if self.tenant in ("national", "provision_log") else f"{prefix}_{self.tenant}"

    @property
    def party(self) -> str:
        """The name this node signs tokens and provision records with."""
        short = {"municipal_rrs": "rrs", "cs_gateway": "cs", "prefecture_server": "pref", "national_server": "national", "provision_log": "provision-log"}[self.kind]
        return short if self.tenant in ("national", "provision_log") else f"{short}-{self.tenant}"


def load_topology(path: str | Path) -> Topology:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return Topology.model_validate(data)
