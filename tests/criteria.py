"""Queries that use one criterion each, generated from the query contracts (unit and e2e tests share them)."""

from __future__ import annotations

from contracts.affairs import Criterion
from contracts.identifiers import new_individual_number, new_resident_code
from contracts.provision import CRITERIA_MODELS, NOT_CRITERIA

#: a well-formed value for each criterion
SAMPLES = {
    Criterion.resident_code: new_resident_code,
    Criterion.individual_number: new_individual_number,
    Criterion.pseudonym: lambda: "p1" + "a" * 44,
    Criterion.family_name: lambda: "検証",
    Criterion.given_name: lambda: "花子",
    Criterion.family_name_kana: lambda: "ケンショウ",
    Criterion.given_name_kana: lambda: "ハナコ",
    Criterion.birth_date: lambda: "1990-04-01",
    Criterion.sex: lambda: "female",
    Criterion.address_contains: lambda: "千代田",
}


def model_of(criterion: Criterion):
    [model] = [m for m in CRITERIA_MODELS if criterion.value in m.model_fields]
    return model


def criteria_row(criterion: Criterion) -> dict:
    """A bulk row (or, with the per-query members added, a query) that uses ``criterion``, plus only the
    criteria its shape requires (a search by basic items: a family name and the birth date)."""
    model = model_of(criterion)
    required = {name for name, field in model.model_fields.items() if field.is_required() and name not in NOT_CRITERIA}
    if model.__name__ == "BasicItemsCriteria" and criterion is not Criterion.family_name_kana:
        required.add(Criterion.family_name.value)  # a search needs a name (its furigana will do)
    names = {criterion.value, *required}
    return {"type": model.model_fields["type"].annotation.__args__[0], **{name: SAMPLES[Criterion(name)]() for name in sorted(names)}}
