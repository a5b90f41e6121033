"""Who may share an exported model, under which licence, and what its users must cite.

An export hands the backbone's weights on (merged with the run's own), so their terms decide:

- a backbone whose weights are gated (DINOv3: each user accepts Meta's licence on the hub) is refused,
  since a package would give them to people who never accepted it;
- a backbone whose licence is not an SPDX licence (the "DINOv3 License") is refused: emfm cannot tell
  that it allows redistribution;
- a registered backbone (:func:`emfm.backbones.get_backbone_info`) gives the licence and its paper;
- any other ViT (a local directory, an unregistered hub id) has no record, so the user must say under
  which licence its weights may be shared (``--license``); its family's paper is still cited;
- the from-scratch U-Net carries no third-party weights: the user's licence, MIT unless told otherwise.

The datasets the run was trained and tested on (their modules' citation and licence) are cited too, and
their terms are written into the package's documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from emfm.errors import ConfigError

DEFAULT_SCRATCH_LICENSE = "MIT"
UNET_CITATION = (
    "Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical Image Segmentation, MICCAI 2015",
    "10.1007/978-3-319-24574-4_28",
)
_ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")
_DOI = re.compile(r"doi:\s*(10\.\d{4,9}/\S+?)(?=[\s,;]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Citation:
    """A reference: free text and a DOI or a URL (bioimage.io needs one of the two)."""

    text: str
    doi: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class DatasetTerms:
    """A dataset the run saw: its name, title, what to cite and its terms of use."""

    name: str
    title: str
    citation: str
    licence: str


@dataclass(frozen=True)
class Provenance:
    """The package's licence, authors and citations, and the facts behind them (for its documentation)."""

    license: str
    authors: tuple[str, ...]
    citations: tuple[Citation, ...]
    backbone: str
    backbone_terms: str
    datasets: tuple[DatasetTerms, ...] = field(default_factory=tuple)


def check_license(license: str) -> str:
    """``license`` if it is an SPDX identifier (what bioimage.io accepts), else a ConfigError."""
    from bioimageio.spec.model.v0_5 import LicenseId
    from pydantic import TypeAdapter, ValidationError

    try:
        return str(TypeAdapter(LicenseId).validate_python(license))
    except ValidationError:
        raise ConfigError(
            f"licence {license!r} is not an SPDX licence identifier (e.g. MIT, Apache-2.0, CC-BY-4.0); "
            f"pass --license with one"
        ) from None


def backbone_record(info: Any, family: str):
    """``(record, registered)``: the registry record of the run's backbone (by name or hub id), or the
    first record of its family (for the paper to cite) and False, or ``(None, False)``."""
    from emfm.backbones import get_backbone_info, list_backbones

    records = list_backbones()
    for record in records:
        if info.backbone in (record.name, record.hub_id):
            return get_backbone_info(record.name), True
    return next((r for r in records if r.family == family), None), False


def backbone_terms(info: Any, family: str, license: str | None) -> tuple[str, str, list[Citation]]:
    """``(licence, terms, citations)`` for the run's backbone, or a ConfigError saying why it may not be
    shared. ``license`` is what the user gave (None: the registry's)."""
    from emfm.baselines import is_scratch_model

    if is_scratch_model(info.backbone):
        chosen = check_license(license or DEFAULT_SCRATCH_LICENSE)
        return chosen, f"{info.backbone}: trained from scratch, no third-party weights", [Citation(*UNET_CITATION)]
    record, registered = backbone_record(info, family)
    family_records = _family_records(family)
    gated = record.gated if registered else bool(family_records) and all(r.gated for r in family_records)
    if gated:
        name = record.name if registered else f"{info.backbone_name} ({family})"
        raise ConfigError(
            f"cannot export {name}: its weights are gated ({record.license}: each user must accept the licence "
            f"on the hub), and a package would hand them to people who have not"
        )
    paper = paper_citation(record.paper) if record is not None else None
    citations = [paper] if paper is not None else []
    if registered:
        try:
            own = check_license(record.license)
        except ConfigError:
            raise ConfigError(
                f"cannot export {record.name}: its licence {record.license!r} is not an open licence emfm knows to "
                f"allow redistribution"
            ) from None
        terms = f"{record.name}: {record.license} ({record.hub_id})"
        return check_license(license) if license else own, terms, citations
    if not license:
        raise ConfigError(
            f"backbone {info.backbone_name} ({info.backbone}) is not in emfm's registry, so the licence of its "
            f"weights is unknown; pass --license SPDX-ID, the licence under which you may share them"
        )
    return check_license(license), f"{info.backbone_name}: {license} (as stated by the exporter)", citations


def _family_records(family: str) -> list:
    from emfm.backbones import list_backbones

    return [r for r in list_backbones() if r.family == family]


def paper_citation(text: str) -> Citation | None:
    """A registry paper string as a citation with its DOI (arXiv's for an arXiv id), or None when the
    string names neither (bioimage.io needs one; the paper then stays in the documentation)."""
    match = _ARXIV.search(text)
    if match:
        return Citation(text, doi=f"10.48550/arXiv.{match.group(1)}")
    match = _DOI.search(text)
    return Citation(text, doi=match.group(1)) if match else None


def dataset_terms(names: list[str]) -> tuple[list[DatasetTerms], list[Citation]]:
    """The datasets' facts and their citations (DOI if the citation names one, else the dataset's URL)."""
    from emfm.data import get_dataset

    terms, citations = [], []
    for name in dict.fromkeys(names):
        ds = get_dataset(name)
        terms.append(DatasetTerms(name=name, title=ds.title, citation=ds.citation, licence=ds.licence))
        if not ds.citation:
            continue
        match = _DOI.search(ds.citation)
        if match:
            citations.append(Citation(ds.citation, doi=match.group(1)))
        elif ds.url:
            citations.append(Citation(ds.citation, url=ds.url))
    return terms, citations


def provenance(info: Any, family: str, config: Any, *, license: str | None, authors: list[str] | None) -> Provenance:
    """Everything a package says about its origin; raises ConfigError for a backbone it may not share."""
    chosen, terms, citations = backbone_terms(info, family, license)
    datasets, data_citations = dataset_terms([*config.train, *config.test])
    return Provenance(
        license=chosen,
        authors=tuple(authors or [_login_name()]),
        citations=tuple(citations + data_citations),
        backbone=info.backbone_name,
        backbone_terms=terms,
        datasets=tuple(datasets),
    )


def _login_name() -> str:
    """Who exports, when no ``--author`` is given: the login name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user database entry (some containers)
        return "emfm user"
