from rest_framework import pagination
from rest_framework.exceptions import ValidationError


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=` and `?page_size=` (default 20, at most 100; a larger one is capped at 100).

    A page or page_size that is not a positive integer is a 400 rather than being silently
    replaced; a page past the end is a 404, as in DRF.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        for param in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(param)
            if raw is None or (param == self.page_query_param and raw == "last"):
                continue
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) > 0):
                errors[param] = ["A positive integer is required."]
        if errors:
            raise ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)
