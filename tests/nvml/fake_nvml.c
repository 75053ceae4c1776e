/*
 * A stand-in libnvidia-ml.so for the GPU test (tests/it/agent_gpu.rs): the NVML calls the agent
 * makes, compiled against NVIDIA's own nvml.h (installed by `tests/env/install.sh nvml`), so every
 * prototype, struct layout, version word and error code is checked by the compiler against the
 * header a real driver implements. The agent loads it through nvml-wrapper exactly as it loads the
 * driver's library: dlopen, symbol lookup, nvmlInit_v2 ... nvmlShutdown.
 *
 * It serves GPUs described by the text file "state" in the folder FAKE_NVML_DIR (given at compile
 * time), read again on every call so a test can change the GPUs under a running agent:
 *
 *   init ok|driver_not_loaded
 *   gpu UUID UTIL MEM_USED MEM_TOTAL TEMP POWER_MW PIDS ok|lost NAME...
 *   mig CARD SLOT UUID MEM_USED MEM_TOTAL PIDS NAME...
 *
 * A '-' field is NVML_ERROR_NOT_SUPPORTED (a board without the sensor); PIDS is a comma list,
 * 'none' for no compute process. A 'lost' GPU answers NVML_ERROR_GPU_IS_LOST, and so do its MIG
 * devices. A 'mig' line is a MIG device in slot SLOT of the CARD-th 'gpu'; a card with MIG
 * devices is in MIG mode and answers as nvml.h documents for a caller without root: utilization
 * is not supported, and its aggregate memory and process list need privileges. A MIG device
 * reports its own memory and processes; utilization, temperature and power are the card's alone.
 * Each nvmlInit_v2 and nvmlShutdown is appended to FAKE_NVML_DIR/calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvml.h"

#ifndef FAKE_NVML_DIR
#error "compile with -DFAKE_NVML_DIR=\"/folder/of/the/state/file\""
#endif

#define MAX_GPUS 8
#define MAX_SLOTS 7 /* MIG devices a card can hold */
#define MAX_PIDS 16

/* A card's handle, or a MIG device's (slot >= 0) under card `index`. */
struct nvmlDevice_st {
    unsigned int index;
    int slot;
};

struct gpu {
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    long long util, mem_used, mem_total, temp, power_mw; /* -1: not supported */
    int pids_supported;
    unsigned int npids;
    unsigned int pids[MAX_PIDS];
    int lost;
    int mig_mode;                /* a card with MIG devices */
    struct gpu_mig {
        int present;
        char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
        char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
        long long mem_used, mem_total;
        int pids_supported;
        unsigned int npids;
        unsigned int pids[MAX_PIDS];
    } migs[MAX_SLOTS];
};

static struct nvmlDevice_st handles[MAX_GPUS];
static struct nvmlDevice_st mig_handles[MAX_GPUS][MAX_SLOTS];
static int initialized;

static void log_call(const char *what) {
    FILE *f = fopen(FAKE_NVML_DIR "/calls", "a");
    if (f) {
        fprintf(f, "%s\n", what);
        fclose(f);
    }
}

static long long field(const char *s) { return strcmp(s, "-") == 0 ? -1 : atoll(s); }

/* A PIDS field: '-' not supported, 'none' no process, else a comma list. */
static void parse_pids(char *pids, int *supported, unsigned int *n, unsigned int *out) {
    *supported = strcmp(pids, "-") != 0;
    *n = 0;
    if (*supported && strcmp(pids, "none") != 0) {
        for (char *p = strtok(pids, ","); p && *n < MAX_PIDS; p = strtok(NULL, ","))
            out[(*n)++] = (unsigned int)strtoul(p, NULL, 10);
    }
}

/* Reads the state file; returns the number of GPUs, and whether init should fail. */
static unsigned int load(struct gpu *gpus, int *init_fails) {
    unsigned int n = 0;
    char line[1024];
    FILE *f = fopen(FAKE_NVML_DIR "/state", "r");
    *init_fails = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        char init[32];
        char util[32], used[32], total[32], temp[32], power[32], pids[256], status[16];
        char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE], name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
        if (sscanf(line, "init %31s", init) == 1) {
            *init_fails = strcmp(init, "ok") != 0;
            continue;
        }
        unsigned int card, slot;
        if (sscanf(line, "mig %u %u %79s %31s %31s %255s %95[^\n]", &card, &slot, uuid, used, total, pids,
                   name) == 7) {
            if (card >= n || slot >= MAX_SLOTS) continue;
            struct gpu_mig *m = &gpus[card].migs[slot];
            m->present = 1;
            memcpy(m->uuid, uuid, sizeof m->uuid);
            memcpy(m->name, name, sizeof m->name);
            m->mem_used = field(used);
            m->mem_total = field(total);
            parse_pids(pids, &m->pids_supported, &m->npids, m->pids);
            gpus[card].mig_mode = 1;
            continue;
        }
        if (n == MAX_GPUS) continue;
        struct gpu *g = &gpus[n];
        memset(g, 0, sizeof *g);
        if (sscanf(line, "gpu %79s %31s %31s %31s %31s %31s %255s %15s %95[^\n]", g->uuid, util, used,
                   total, temp, power, pids, status, name) != 9)
            continue;
        memcpy(g->name, name, sizeof g->name);
        g->util = field(util);
        g->mem_used = field(used);
        g->mem_total = field(total);
        g->temp = field(temp);
        g->power_mw = field(power);
        g->lost = strcmp(status, "lost") == 0;
        parse_pids(pids, &g->pids_supported, &g->npids, g->pids);
        n++;
    }
    fclose(f);
    return n;
}

/* What a handle answers, or the NVML error a driver gives for it. A MIG device is returned as a
 * card of its own whose card-wide readings (utilization, temperature, power) are not supported. */
static nvmlReturn_t lookup(nvmlDevice_t device, struct gpu *out) {
    struct gpu gpus[MAX_GPUS];
    int init_fails;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = load(gpus, &init_fails);
    if (device->index >= n) return NVML_ERROR_GPU_IS_LOST;
    struct gpu *card = &gpus[device->index];
    if (card->lost) return NVML_ERROR_GPU_IS_LOST;
    if (device->slot < 0) {
        *out = *card;
        return NVML_SUCCESS;
    }
    struct gpu_mig *m = &card->migs[device->slot];
    if (!m->present) return NVML_ERROR_INVALID_ARGUMENT; /* destroyed since the handle was had */
    memset(out, 0, sizeof *out);
    memcpy(out->uuid, m->uuid, sizeof out->uuid);
    memcpy(out->name, m->name, sizeof out->name);
    out->util = out->temp = out->power_mw = -1;
    out->mem_used = m->mem_used;
    out->mem_total = m->mem_total;
    out->pids_supported = m->pids_supported;
    out->npids = m->npids;
    memcpy(out->pids, m->pids, sizeof out->pids);
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlInit_v2(void) {
    struct gpu gpus[MAX_GPUS];
    int init_fails;
    load(gpus, &init_fails);
    log_call(init_fails ? "nvmlInit_v2 failed" : "nvmlInit_v2");
    if (init_fails) return NVML_ERROR_DRIVER_NOT_LOADED;
    initialized++;
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    log_call("nvmlShutdown");
    return NVML_SUCCESS;
}

const DECLDIR char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

nvmlReturn_t DECLDIR nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    struct gpu gpus[MAX_GPUS];
    int init_fails;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = load(gpus, &init_fails);
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    struct gpu gpus[MAX_GPUS];
    int init_fails;
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    unsigned int n = load(gpus, &init_fails);
    if (!device || index >= n) return NVML_ERROR_INVALID_ARGUMENT;
    if (gpus[index].lost) return NVML_ERROR_GPU_IS_LOST;
    handles[index].index = index;
    handles[index].slot = -1;
    *device = &handles[index];
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(const char *value, char *out, unsigned int length) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    return r != NVML_SUCCESS ? r : copy_string(g.uuid, uuid, length);
}

nvmlReturn_t DECLDIR nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    return r != NVML_SUCCESS ? r : copy_string(g.name, name, length);
}

nvmlReturn_t DECLDIR nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!utilization) return NVML_ERROR_INVALID_ARGUMENT;
    if (g.util < 0 || g.mig_mode) return NVML_ERROR_NOT_SUPPORTED;
    utilization->gpu = (unsigned int)g.util;
    utilization->memory = (unsigned int)g.util / 2;
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    /* The driver refuses a struct whose version word is not the header's. */
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (g.mig_mode) return NVML_ERROR_NO_PERMISSION; /* a MIG-mode card's aggregate needs root */
    if (g.mem_used < 0 || g.mem_total < 0) return NVML_ERROR_NOT_SUPPORTED;
    memory->total = (unsigned long long)g.mem_total;
    memory->reserved = 0;
    memory->used = (unsigned long long)g.mem_used;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                              unsigned int *temp) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!temp || sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    if (g.temp < 0) return NVML_ERROR_NOT_SUPPORTED;
    *temp = (unsigned int)g.temp;
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    if (g.power_mw < 0) return NVML_ERROR_NOT_SUPPORTED;
    *power = (unsigned int)g.power_mw;
    return NVML_SUCCESS;
}

/* As the driver does: with too small a buffer (or none) it says how many entries there are. */
nvmlReturn_t DECLDIR nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!infoCount) return NVML_ERROR_INVALID_ARGUMENT;
    if (g.mig_mode) return NVML_ERROR_NO_PERMISSION; /* per-instance lists come from MIG handles */
    if (!g.pids_supported) return NVML_ERROR_NOT_SUPPORTED;
    if (*infoCount < g.npids || (!infos && g.npids > 0)) {
        *infoCount = g.npids;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < g.npids; i++) {
        infos[i].pid = g.pids[i];
        infos[i].usedGpuMemory = 512ULL << 20;
        infos[i].gpuInstanceId = 0xFFFFFFFF;
        infos[i].computeInstanceId = 0xFFFFFFFF;
    }
    *infoCount = g.npids;
    return NVML_SUCCESS;
}

/* Zero when MIG is off or not supported, as nvml.h says. */
nvmlReturn_t DECLDIR nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!count || device->slot >= 0) return NVML_ERROR_INVALID_ARGUMENT;
    *count = g.mig_mode ? MAX_SLOTS : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t DECLDIR nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                         nvmlDevice_t *migDevice) {
    struct gpu g;
    nvmlReturn_t r = lookup(device, &g);
    if (r != NVML_SUCCESS) return r;
    if (!migDevice || device->slot >= 0 || index >= MAX_SLOTS) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g.mig_mode) return NVML_ERROR_NOT_SUPPORTED;
    if (!g.migs[index].present) return NVML_ERROR_NOT_FOUND;
    mig_handles[device->index][index].index = device->index;
    mig_handles[device->index][index].slot = (int)index;
    *migDevice = &mig_handles[device->index][index];
    return NVML_SUCCESS;
}
