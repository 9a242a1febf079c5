#include "csop_plugin.h"
