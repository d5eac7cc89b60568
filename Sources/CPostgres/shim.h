// libpq (Debian's libpq-dev): the PostgreSQL client library, for the PostgreSQL record backend.
#include <libpq-fe.h>
