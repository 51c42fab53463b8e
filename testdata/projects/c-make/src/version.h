#define KGZ_VERSION "1.2.0"
