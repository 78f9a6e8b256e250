"""Expectation suite for the ERP canonical customer frame (``customers``).

The frame is produced by the SAP Business Partner mapping; one row per
partner. Every rule below carries analyst-facing ``notes`` (rendered in Data
Docs) and a stable ``meta["rule_id"]`` that quarantine records can refer to.

Severity:

* ``critical`` row-level rules quarantine the offending rows (see
  :func:`expectations.runner.validate_frame`).
* ``warning`` rules are reported (Data Docs, ``ValidationOutcome.failures``)
  but never quarantine: a duplicated GSTIN is suspicious, yet two partners can
  legitimately share one (e.g. branches of one registered taxpayer).
* Table-level rules (column set) never quarantine rows; they flag the batch.

"Not in the future" for ``sap_changed_at`` is evaluated at validation time,
not at suite-build time (the suite is built once per process and cached), via
the ``max_sap_changed_at`` suite parameter that :func:`suite_parameters`
supplies to the runner on every call.

Importing this module does not import Great Expectations; only
:func:`build_suite` does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from data_mappings.columns import CUSTOMER_COLUMNS as CANONICAL_COLUMNS

if TYPE_CHECKING:
    import great_expectations as gx

SUITE_NAME: Final = "customers"

#: Columns of the canonical customer frame: one declaration, owned by the mapping that produces it.
CUSTOMER_COLUMNS: Final[tuple[str, ...]] = tuple(CANONICAL_COLUMNS)

CUSTOMER_CATEGORIES: Final[tuple[str, ...]] = ("person", "organization")

#: ISO 3166-1 alpha-2: all 249 officially assigned codes (as published in the
#: IANA tz database's iso3166.tab). User-assigned codes such as XK (Kosovo) are
#: deliberately absent: SAP must be configured with an official code.
ISO_3166_ALPHA2: Final[frozenset[str]] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ
    BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR
    CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ
    LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
    PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
    SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR
    TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

# Patterns end in ``\Z`` rather than ``$``: the pandas engine uses Python's
# ``re.search``, where ``$`` also accepts a trailing newline.
CUSTOMER_ID_PATTERN: Final = r"^[0-9]{1,10}\Z"
NAME_NOT_BLANK_PATTERN: Final = r"\S"
LANGUAGE_PATTERN: Final = r"^[A-Za-z]{2}\Z"
EMAIL_PATTERN: Final = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\Z"
E164_PATTERN: Final = r"^\+[1-9][0-9]{7,14}\Z"
INDIA_PIN_PATTERN: Final = r"^[1-9][0-9]{5}\Z"
GSTIN_PATTERN: Final = r"^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]\Z"
NAME_MAX_LENGTH: Final = 81

#: SAP stamps ``sap_changed_at`` with its own clock; tolerate this much skew
#: against the worker's clock before calling a timestamp "in the future".
CLOCK_SKEW_TOLERANCE: Final = timedelta(minutes=5)

CUSTOMER_SUITE_DESCRIPTION: Final = (
    "Quality gate for the ERP canonical customer frame mapped from SAP Business "
    "Partners. Rows failing a critical rule are quarantined and not written to "
    "the ERP; warning rules are reported only. customer_id uniqueness and GSTIN "
    "duplicates are checked within one sync batch, not against the ERP table."
)


def suite_parameters(now: datetime) -> dict[str, Any]:
    """Runtime suite parameters for one validation call at time ``now`` (UTC)."""
    return {"max_sap_changed_at": now + CLOCK_SKEW_TOLERANCE}


def build_suite() -> gx.ExpectationSuite:
    """Build the ``customers`` expectation suite (not yet added to a context)."""
    import great_expectations as gx
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.row_conditions import Column

    from expectations.limits import database_limits
    from hub.core.models import Customer

    gxe = gx.expectations

    def meta(rule_id: str) -> dict[str, str]:
        return {"rule_id": f"customers.{rule_id}"}

    expectations: list[gxe.Expectation] = [
        # --- table level: reported, never quarantines rows -------------------
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(CUSTOMER_COLUMNS),
            exact_match=True,
            meta=meta("columns"),
            notes=(
                "The mapping must emit exactly the canonical customer columns. "
                "A failure means the SAP mapping and this suite disagree "
                "(code drift), not that individual rows are bad."
            ),
        ),
        # --- identity --------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(
            column="customer_id",
            meta=meta("customer_id.required"),
            notes="Every customer needs its SAP Business Partner number.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="customer_id",
            regex=CUSTOMER_ID_PATTERN,
            meta=meta("customer_id.format"),
            notes="SAP Business Partner numbers are 1-10 digits (no letters, no spaces).",
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="customer_id",
            meta=meta("customer_id.unique"),
            notes=(
                "A Business Partner may appear only once per sync batch; all "
                "copies of a duplicated number are quarantined because we "
                "cannot tell which one is current."
            ),
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="category",
            meta=meta("category.required"),
            notes="Business Partner category must be known.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="category",
            value_set=list(CUSTOMER_CATEGORIES),
            meta=meta("category.allowed"),
            notes="Category is 'person' (SAP category 1) or 'organization' (SAP category 2).",
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="name",
            meta=meta("name.required"),
            notes="Every customer needs a display name.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="name",
            regex=NAME_NOT_BLANK_PATTERN,
            meta=meta("name.not_blank"),
            notes="The name must contain at least one non-whitespace character.",
        ),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="name",
            min_value=1,
            max_value=NAME_MAX_LENGTH,
            meta=meta("name.length"),
            notes=f"The ERP customer name column holds at most {NAME_MAX_LENGTH} characters.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="language",
            regex=LANGUAGE_PATTERN,
            meta=meta("language.format"),
            notes="Correspondence language is a 2-letter ISO 639-1 code (e.g. EN, DE) or empty.",
        ),
        # --- contact ---------------------------------------------------------
        gxe.ExpectColumnValuesToMatchRegex(
            column="email",
            regex=EMAIL_PATTERN,
            meta=meta("email.format"),
            notes=(
                "Email is empty or looks like local@domain.tld. This is a "
                "pragmatic check (no spaces, one @, a dotted domain), not full RFC 5322."
            ),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="phone",
            regex=E164_PATTERN,
            meta=meta("phone.format"),
            notes=(
                "Phone is empty or in E.164 after normalisation: '+', country "
                "code, 8-15 digits in total, no spaces."
            ),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="mobile",
            regex=E164_PATTERN,
            meta=meta("mobile.format"),
            notes="Mobile is empty or in E.164 (same rule as phone).",
        ),
        # --- address ---------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(
            column="country",
            meta=meta("country.required"),
            notes="Every customer address needs a country.",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="country",
            value_set=sorted(ISO_3166_ALPHA2),
            meta=meta("country.iso3166"),
            notes="Country must be an officially assigned ISO 3166-1 alpha-2 code (upper case).",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="postal_code",
            regex=INDIA_PIN_PATTERN,
            row_condition=Column("country") == "IN",
            meta=meta("postal_code.india_pin"),
            notes=(
                "Only for country IN: the postal code, when present, must be a "
                "6-digit Indian PIN not starting with 0. Other countries' postal "
                "codes are not format-checked."
            ),
        ),
        # --- tax -------------------------------------------------------------
        gxe.ExpectColumnValuesToMatchRegex(
            column="gstin",
            regex=GSTIN_PATTERN,
            meta=meta("gstin.format"),
            notes=(
                "GSTIN is empty or 15 characters: 2-digit state code, 10-character "
                "PAN, entity number, 'Z', check character."
            ),
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="gstin",
            severity=FailureSeverity.WARNING,
            meta=meta("gstin.unique"),
            notes=(
                "Warning only: partners sharing a GSTIN are reported for review "
                "but still synced, since branches of one taxpayer may share it."
            ),
        ),
        # --- flags -----------------------------------------------------------
        *(
            rule
            for flag in ("is_blocked", "is_archived", "deletion_flag")
            for rule in (
                gxe.ExpectColumnValuesToNotBeNull(
                    column=flag,
                    meta=meta(f"{flag}.required"),
                    notes=f"{flag} must be set explicitly (true/false), never unknown.",
                ),
                gxe.ExpectColumnValuesToBeInSet(
                    column=flag,
                    value_set=[True, False],
                    meta=meta(f"{flag}.boolean"),
                    notes=f"{flag} is a boolean.",
                ),
            )
        ),
        # --- timestamps ------------------------------------------------------
        gxe.ExpectColumnValuesToNotBeNull(
            column="sap_changed_at",
            meta=meta("sap_changed_at.required"),
            notes="The SAP last-change timestamp drives incremental sync and must be present.",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="sap_changed_at",
            max_value={"$PARAMETER": "max_sap_changed_at"},
            meta=meta("sap_changed_at.not_future"),
            notes=(
                "The SAP last-change timestamp may not lie in the future "
                f"(more than {int(CLOCK_SKEW_TOLERANCE.total_seconds() // 60)} "
                "minutes of clock skew are not tolerated)."
            ),
        ),
        # --- mapping ---------------------------------------------------------
        gxe.ExpectColumnValuesToBeNull(
            column="mapping_errors",
            meta=meta("mapping_errors.none"),
            notes=(
                "The SAP mapping records here why a field could not be "
                "converted. Any such row is quarantined; the value shows the reason."
            ),
        ),
    ]
    # Every other limit of the ERP table (VARCHAR lengths, NOT NULL), generated from the model.
    expectations += database_limits(Customer, CUSTOMER_COLUMNS, expectations, rule_prefix=SUITE_NAME)

    suite = gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=expectations,
        meta={
            "notes": {"format": "markdown", "content": [CUSTOMER_SUITE_DESCRIPTION]},
            "dataset": "customers",
        },
    )
    return suite
