#ifndef LOCKBOX_CLIBPQ_SHIM_H
#define LOCKBOX_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
