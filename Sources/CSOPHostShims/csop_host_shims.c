#include "csop_host_shims.h"
