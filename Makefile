# es — PGXS build.  `make && make install`; tests: bash tests/run.sh
EXTENSION = es
EXTVERSION = 0.2.0

MODULE_big = es
OBJS = \
	src/es.o \
	src/catalog.o \
	src/append.o \
	src/stream_row.o \
	src/event_rows.o \
	src/read.o \
	src/immutable.o \
	src/upcast.o \
	src/order.o \
	src/privilege.o \
	src/launcher.o \
	src/worker.o \
	src/aggregate.o \
	src/projection.o \
	src/snapshot_task.o

# The install script for the current version is generated from one source
# (sql/es.sql), and removed by make clean.  Every other sql/es--*.sql is
# tracked and shipped as written: the install scripts of released versions,
# frozen (sql/es--0.1.0.sql), and the upgrade scripts (sql/es--A--B.sql).
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

# Regression tests: every sql/NNN_topic.sql, in order.
TESTS = $(sort $(wildcard sql/[0-9][0-9][0-9]_*.sql))
REGRESS = $(patsubst sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --load-extension=$(EXTENSION)

EXTRA_CLEAN = tests/stress/es_stress tests/follower/es_follower

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
ifdef ES_WERROR
PG_CFLAGS += -Werror
endif

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

$(OBJS): src/es.h src/errcodes.h src/compat.h src/launcher.h
