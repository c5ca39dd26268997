"""System checks of the project's own invariants."""

from django.core import checks

from billing import currencies


def currency_places(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """`billing.E020`: ISO's table (the installed `iso4217`) gives a currency other places than the
    ones its stored amounts, the database's CHECK on them and the InvoiceTotals triggers were written
    with (`billing.currencies.RECORDED_MINOR_UNITS`). The recorded places stay in use, so nothing
    stored is reinterpreted; but the table has moved, and a migration must move the data with it."""
    changed = currencies.changed_minor_units()
    if not changed:
        return []
    named = ", ".join(
        f"{code} (recorded {recorded}, ISO now {iso})" for code, (recorded, iso) in changed.items()
    )
    return [
        checks.Error(
            f"ISO 4217 gives other minor units than this database's amounts were written with: {named}.",
            hint=(
                "Amounts are never rescaled silently: pin the previous iso4217 release, or write a migration "
                "that converts the stored amounts and the InvoiceTotals rows of these currencies and update "
                "billing.currencies.RECORDED_MINOR_UNITS with it."
            ),
            id="billing.E020",
        )
    ]
