"""The one pagination every list endpoint under /api/ uses (REST_FRAMEWORK's
DEFAULT_PAGINATION_CLASS): `{"count", "next", "previous", "results"}`, `limit` (default 50, at
most 500) and `offset`. docs/api.md documents it."""

from rest_framework.pagination import LimitOffsetPagination

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class Pagination(LimitOffsetPagination):
    default_limit = PAGE_SIZE
    max_limit = MAX_PAGE_SIZE
