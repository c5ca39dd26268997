import re

from rest_framework import filters
from rest_framework.exceptions import ValidationError
from rest_framework.fields import CharField

from billing.filters import refuse_repeated
from billing.schema import NO_NUL_PATTERN


class SearchFilter(filters.SearchFilter):
    """DRF's `?search=`, with a bad term a 400 on `search` in the API's field-error shape.

    DRF answers a NUL character with a bare list (`["Null characters are not allowed."]`), which is
    not the documented `{"field": ["message"]}`; a term is also limited to 200 characters, as the
    invoice search is, and given once (DRF would take the last of two).
    """

    max_length = 200

    def get_search_terms(self, request):
        refuse_repeated(request.query_params, [self.search_param])
        value = request.query_params.get(self.search_param, "")
        field = CharField(trim_whitespace=False, allow_blank=True, max_length=self.max_length)
        try:
            cleaned = field.run_validation(value)
        except ValidationError as exc:
            raise ValidationError({self.search_param: exc.detail}) from None
        return filters.search_smart_split(cleaned)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(maxLength=self.max_length, pattern=NO_NUL_PATTERN)
            parameter["allowEmptyValue"] = True  # no search: every customer
        return parameters


class OrderingFilter(filters.OrderingFilter):
    """DRF's `?ordering=name,-created_at`, with an unknown field a 400 on `ordering` rather than
    silently ignored, the parameter given once (several fields are comma-separated in one value),
    ties broken by id, and the choices in the schema (as the invoice and payment lists do)."""

    def get_ordering(self, request, queryset, view):
        refuse_repeated(request.query_params, [self.ordering_param])
        param = request.query_params.get(self.ordering_param)
        if param:
            valid = {name for name, _ in self.get_valid_fields(queryset, view, {"request": request})}
            if any(term.removeprefix("-") not in valid for term in param.split(",")):
                choices = ", ".join(sorted(valid))
                raise ValidationError({self.ordering_param: [f"Order by one or more of: {choices}."]})
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if ordering and not {"id", "-id"} & set(ordering):
            ordering.append("-id" if ordering[-1].startswith("-") else "id")
        return ordering

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        term = "-?(?:{})".format("|".join(re.escape(name) for name in view.ordering_fields))
        for parameter in parameters:
            parameter["schema"]["pattern"] = f"^{term}(?:,{term})*$"
            parameter["allowEmptyValue"] = True  # no ordering: the default one
        return parameters
