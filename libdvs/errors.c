/* Error codes: one table (DVS_ERRNO_MAP in dvs.h) gives the names and texts. */
#include <errno.h>
#include <string.h>

#include "dvs.h"

DVS_API unsigned dvs_version(void)
{
    return DVS_VERSION_HEX;
}

DVS_API const char *dvs_strerror(int err)
{
    switch (err) {
#define DVS__ERR_MSG(name, value, msg) \
    case value:                        \
        return msg;
        DVS_ERRNO_MAP(DVS__ERR_MSG)
#undef DVS__ERR_MSG
    }
    if (err == 0)
        return "success";
    if (err < 0 && err > -4000)
        return strerror(-err); /* glibc's table is static and thread-safe */
    return "unknown error";
}

DVS_API const char *dvs_err_name(int err)
{
    switch (err) {
#define DVS__ERR_NAME(name, value, msg) \
    case value:                         \
        return "DVS_E" #name;
        DVS_ERRNO_MAP(DVS__ERR_NAME)
#undef DVS__ERR_NAME
    }
    if (err == 0)
        return "OK";
    if (err < 0 && err > -4000) {
        const char *n = strerrorname_np(-err);
        return n ? n : "UNKNOWN";
    }
    return "UNKNOWN";
}
