from collections.abc import Callable
from functools import cached_property, partial

from django.core.paginator import Paginator
from rest_framework import pagination
from rest_framework.exceptions import ValidationError

from billing.filters import refuse_repeated


class CountedPaginator(Paginator):
    """Django's paginator, given the number of objects when the caller already knows it.

    The count numbers the pages; the page itself is always a full slice of the objects (Django's
    own clips it to the count), so that the rows listed are the table's whatever the count says.
    """

    def __init__(self, object_list, per_page, *, count: int, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)


class PagedRead:
    """What a paginator slices when a list's rows come from a read of their own rather than a
    queryset: `read(offset=, limit=)` returns that page's rows, in the list's order (a compiled
    read, say: `billing.db.CompiledQuery.page`). Given with its `count` (CountedPaginator)."""

    ordered = True

    def __init__(self, read: Callable[..., list]):
        self.read = read

    def __getitem__(self, window: slice) -> list:
        return self.read(offset=window.start, limit=window.stop - window.start)


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=` and `?page_size=` (default 20, at most 100; a larger one is capped at 100).

    A page or page_size that is not a positive integer, or that is given twice, is a 400 rather
    than being silently replaced; a page past the end is a 404, as in DRF.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    max_digits = 9

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(minimum=1, maximum=10**self.max_digits - 1)
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Results per page (default {self.page_size}; a larger value than "
                    f"{self.max_page_size} is capped at {self.max_page_size})."
                )
        return parameters

    def paginate_queryset(self, queryset, request, view=None, *, count: int | None = None):
        """DRF's pagination; `count`, when given, is the number of objects in `queryset` (one
        that the caller read more cheaply than a COUNT over the queryset)."""
        refuse_repeated(request.query_params, (self.page_query_param, self.page_size_query_param))
        errors = {}
        for param in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(param)
            if raw is None or (param == self.page_query_param and raw == "last"):
                continue
            if not (raw.isascii() and raw.isdigit() and len(raw) <= self.max_digits and int(raw) > 0):
                errors[param] = ["A positive integer is required."]
        if errors:
            raise ValidationError(errors)
        self.django_paginator_class = (
            type(self).django_paginator_class if count is None else partial(CountedPaginator, count=count)
        )
        return super().paginate_queryset(queryset, request, view)
