#ifndef CLINUX_FS_H
#define CLINUX_FS_H
#endif
