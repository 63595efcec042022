#ifndef CLINUX_BLOCK_H
#define CLINUX_BLOCK_H
#endif
