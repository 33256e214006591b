-- Analytical queries over monitoring events, as dashboards and alert rules
-- write them. Compared with PostgreSQL by tests/differential/run.py.
CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, version TEXT, latency_ms DOUBLE PRECISION, status TEXT, score DOUBLE PRECISION, tokens BIGINT, segment TEXT, thumbs_up BOOLEAN);
INSERT INTO events VALUES
('2025-03-01T00:10:00+00:00', 'ranker', 'v1', 116.951, 'error', 0.0941, 1203, 'free', false),
('2025-03-01T00:43:00+00:00', 'summarizer', 'v1', 23.557, 'error', NULL, 879, 'free', false),
('2025-03-01T01:17:00+00:00', 'classifier', 'v1', 59.803, 'ok', NULL, 462, 'free', false),
('2025-03-01T01:55:00+00:00', 'ranker', 'v1', 42.391, 'ok', 0.8161, 380, 'free', false),
('2025-03-01T02:46:00+00:00', 'summarizer', 'v1', 68.568, 'ok', NULL, 132, 'pro', true),
('2025-03-01T03:22:00+00:00', 'classifier', 'v1', 48.976, 'ok', 0.2998, 1636, 'pro', false),
('2025-03-01T03:49:00+00:00', 'ranker', 'v1', 29.516, 'ok', 0.4488, 1257, 'free', NULL),
('2025-03-01T04:35:00+00:00', 'summarizer', 'v2', 38.589, 'ok', 0.0392, 1378, 'free', false),
('2025-03-01T05:14:00+00:00', 'classifier', 'v2', 42.383, 'ok', 0.0688, 201, 'enterprise', true),
('2025-03-01T05:35:00+00:00', 'ranker', 'v2', 86.763, 'ok', 0.0226, 955, 'enterprise', NULL),
('2025-03-01T06:29:00+00:00', 'summarizer', 'v2', 74.972, 'ok', 0.8714, 175, 'pro', true),
('2025-03-01T06:59:00+00:00', 'classifier', 'v2', 84.469, 'ok', 0.2784, 860, 'enterprise', false),
('2025-03-01T07:36:00+00:00', 'ranker', 'v2', 35.377, 'ok', 0.5891, 548, 'enterprise', NULL),
('2025-03-01T08:05:00+00:00', 'summarizer', 'v2', 47.834, 'ok', 0.6905, 1065, 'free', true),
('2025-03-01T08:55:00+00:00', 'classifier', 'v1', 45.408, 'ok', 0.0622, 147, 'pro', true),
('2025-03-01T09:20:00+00:00', 'ranker', 'v1', 19.973, 'ok', 0.5366, 1953, 'enterprise', false),
('2025-03-01T09:52:00+00:00', 'summarizer', 'v1', 31.237, 'ok', 0.9555, 1243, 'enterprise', true),
('2025-03-01T10:32:00+00:00', 'classifier', 'v1', 25.194, 'ok', 0.3119, 305, 'free', false),
('2025-03-01T11:16:00+00:00', 'ranker', 'v1', 87.751, 'ok', 0.2052, 1959, 'enterprise', NULL),
('2025-03-01T12:00:00+00:00', 'summarizer', 'v1', 30.508, 'ok', 0.5184, 1870, 'pro', true),
('2025-03-01T12:27:00+00:00', 'classifier', 'v1', 63.551, 'ok', 0.8115, 1563, 'pro', NULL),
('2025-03-01T13:09:00+00:00', 'ranker', 'v2', 75.136, 'ok', 0.029, 67, 'enterprise', true),
('2025-03-01T13:42:00+00:00', 'summarizer', 'v2', 24.567, 'ok', 0.7231, 725, 'enterprise', NULL),
('2025-03-01T14:18:00+00:00', 'classifier', 'v2', 25.21, 'ok', 0.9852, 1259, 'free', true),
('2025-03-01T15:08:00+00:00', 'ranker', 'v2', 34.816, 'ok', 0.3885, 1467, 'pro', true),
('2025-03-01T15:30:00+00:00', 'summarizer', 'v2', 45.297, 'ok', 0.7218, 958, NULL, false),
('2025-03-01T16:04:00+00:00', 'classifier', 'v2', 72.153, 'ok', 0.9049, 1661, 'pro', false),
('2025-03-01T16:58:00+00:00', 'ranker', 'v2', 38.816, 'ok', NULL, 1998, 'free', false),
('2025-03-01T17:20:00+00:00', 'summarizer', 'v1', 32.098, 'ok', 0.2518, 609, 'pro', false),
('2025-03-01T18:03:00+00:00', 'classifier', 'v1', 35.647, 'ok', 0.3538, 948, NULL, false),
('2025-03-01T18:34:00+00:00', 'ranker', 'v1', 58.484, 'error', 0.1831, 18, 'pro', NULL),
('2025-03-01T19:11:00+00:00', 'summarizer', 'v1', 49.438, 'ok', 0.5183, 1147, NULL, NULL),
('2025-03-01T20:01:00+00:00', 'classifier', 'v1', 51.902, 'ok', NULL, 676, 'pro', false),
('2025-03-01T20:29:00+00:00', 'ranker', 'v1', 49.151, 'ok', 0.6992, 1805, 'enterprise', false),
('2025-03-01T21:04:00+00:00', 'summarizer', 'v1', 81.907, 'ok', 0.0725, 502, NULL, NULL),
('2025-03-01T21:41:00+00:00', 'classifier', 'v2', 122.408, 'ok', 0.7161, 1362, 'enterprise', NULL),
('2025-03-01T22:20:00+00:00', 'ranker', 'v2', 44.512, 'ok', 0.1615, 893, NULL, true),
('2025-03-01T23:02:00+00:00', 'summarizer', 'v2', 34.482, 'ok', NULL, 1144, NULL, true),
('2025-03-01T23:26:00+00:00', 'classifier', 'v2', 42.662, 'ok', 0.1128, 1891, 'pro', NULL),
('2025-03-02T00:05:00+00:00', 'ranker', 'v2', 80.934, 'ok', 0.9114, 1687, 'enterprise', true),
('2025-03-02T00:44:00+00:00', 'summarizer', 'v2', 59.006, 'ok', 0.2791, 1647, 'pro', true),
('2025-03-02T01:19:00+00:00', 'classifier', 'v2', 30.793, 'ok', 0.2645, 259, NULL, NULL),
('2025-03-02T02:04:00+00:00', 'ranker', 'v1', 130.825, 'ok', 0.0432, 1463, 'pro', NULL),
('2025-03-02T02:36:00+00:00', 'summarizer', 'v1', 40.476, 'ok', 0.5311, 431, 'enterprise', true),
('2025-03-02T03:24:00+00:00', 'classifier', 'v1', 69.611, 'ok', 0.0369, 47, 'pro', false),
('2025-03-02T04:00:00+00:00', 'ranker', 'v1', 34.007, 'ok', 0.6565, 1128, NULL, false),
('2025-03-02T04:31:00+00:00', 'summarizer', 'v1', 20.793, 'ok', 0.4047, 721, 'free', NULL),
('2025-03-02T04:59:00+00:00', 'classifier', 'v1', 40.421, 'ok', 0.8705, 1383, 'enterprise', false),
('2025-03-02T05:43:00+00:00', 'ranker', 'v1', 67.204, 'ok', 0.0036, 755, 'enterprise', false),
('2025-03-02T06:23:00+00:00', 'summarizer', 'v2', 40.258, 'error', 0.4746, 1039, 'pro', NULL),
('2025-03-02T07:06:00+00:00', 'classifier', 'v2', 74.646, 'ok', 0.5868, 816, 'free', true),
('2025-03-02T07:36:00+00:00', 'ranker', 'v2', 63.167, 'ok', 0.1553, 1838, NULL, true),
('2025-03-02T08:19:00+00:00', 'summarizer', 'v2', 14.761, 'ok', NULL, 1720, NULL, false),
('2025-03-02T08:57:00+00:00', 'classifier', 'v2', 25.039, 'ok', 0.8047, 1702, 'pro', NULL),
('2025-03-02T09:18:00+00:00', 'ranker', 'v2', 116.599, 'ok', NULL, 48, 'pro', true),
('2025-03-02T10:03:00+00:00', 'summarizer', 'v2', 91.299, 'ok', 0.0661, 1518, NULL, true),
('2025-03-02T10:34:00+00:00', 'classifier', 'v1', 86.973, 'ok', 0.6499, 952, NULL, true),
('2025-03-02T11:11:00+00:00', 'ranker', 'v1', 50.993, 'ok', 0.6428, 168, 'pro', true),
('2025-03-02T11:54:00+00:00', 'summarizer', 'v1', 90.729, 'ok', 0.4824, 1004, 'enterprise', false),
('2025-03-02T12:26:00+00:00', 'classifier', 'v1', 100.484, 'ok', 0.4647, 965, 'free', false),
('2025-03-02T13:06:00+00:00', 'ranker', 'v1', 44.166, 'ok', 0.0765, 1047, NULL, true),
('2025-03-02T13:49:00+00:00', 'summarizer', 'v1', 26.803, 'ok', 0.9527, 281, 'enterprise', NULL),
('2025-03-02T14:25:00+00:00', 'classifier', 'v1', 53.805, 'error', 0.4508, 628, 'pro', true),
('2025-03-02T15:02:00+00:00', 'ranker', 'v2', 47.226, 'ok', 0.3383, 825, 'free', NULL),
('2025-03-02T15:28:00+00:00', 'summarizer', 'v2', 97.713, 'ok', 0.9988, 1216, 'free', true),
('2025-03-02T16:18:00+00:00', 'classifier', 'v2', 43.031, 'ok', 0.1489, 1998, 'enterprise', true),
('2025-03-02T16:58:00+00:00', 'ranker', 'v2', 23.646, 'ok', 0.029, 1569, NULL, false),
('2025-03-02T17:36:00+00:00', 'summarizer', 'v2', 39.173, 'ok', 0.6149, 293, 'enterprise', true),
('2025-03-02T17:57:00+00:00', 'classifier', 'v2', 140.107, 'ok', 0.2817, 533, 'enterprise', true),
('2025-03-02T18:53:00+00:00', 'ranker', 'v2', 32.444, 'ok', 0.6432, 163, 'pro', false),
('2025-03-02T19:25:00+00:00', 'summarizer', 'v1', 60.028, 'ok', 0.4274, 1131, 'pro', NULL),
('2025-03-02T19:49:00+00:00', 'classifier', 'v1', 25.689, 'ok', 0.8094, 423, 'free', false),
('2025-03-02T20:37:00+00:00', 'ranker', 'v1', 33.971, 'ok', 0.7521, 1030, 'enterprise', false),
('2025-03-02T21:12:00+00:00', 'summarizer', 'v1', 25.142, 'ok', 0.216, 565, 'pro', true),
('2025-03-02T21:50:00+00:00', 'classifier', 'v1', 71.103, 'ok', 0.968, 270, 'free', true),
('2025-03-02T22:30:00+00:00', 'ranker', 'v1', 140.442, 'error', 0.9282, 1091, NULL, true),
('2025-03-02T22:59:00+00:00', 'summarizer', 'v1', 79.474, 'ok', 0.1089, 1700, NULL, NULL),
('2025-03-02T23:46:00+00:00', 'classifier', 'v2', 22.313, 'error', 0.9624, 1293, 'enterprise', false),
('2025-03-03T00:26:00+00:00', 'ranker', 'v2', 41.566, 'ok', 0.9435, 402, NULL, true),
('2025-03-03T00:50:00+00:00', 'summarizer', 'v2', 39.121, 'ok', 0.5263, 1130, 'pro', NULL),
('2025-03-03T01:33:00+00:00', 'classifier', 'v2', 74.006, 'error', 0.6745, 870, 'free', true),
('2025-03-03T02:04:00+00:00', 'ranker', 'v2', 40.949, 'ok', 0.7971, 1523, 'free', NULL),
('2025-03-03T02:49:00+00:00', 'summarizer', 'v2', 110.241, 'ok', 0.2214, 1567, 'enterprise', NULL),
('2025-03-03T03:30:00+00:00', 'classifier', 'v2', 54.306, 'ok', 0.6653, 1953, 'pro', true),
('2025-03-03T03:49:00+00:00', 'ranker', 'v1', 25.886, 'ok', 0.7327, 172, 'pro', true),
('2025-03-03T04:31:00+00:00', 'summarizer', 'v1', 71.692, 'ok', 0.1693, 15, 'free', true),
('2025-03-03T05:04:00+00:00', 'classifier', 'v1', 34.188, 'ok', 0.4324, 110, NULL, NULL),
('2025-03-03T05:50:00+00:00', 'ranker', 'v1', 58.981, 'ok', 0.4745, 1303, NULL, NULL),
('2025-03-03T06:36:00+00:00', 'summarizer', 'v1', 97.706, 'ok', 0.3391, 567, 'enterprise', false),
('2025-03-03T06:54:00+00:00', 'classifier', 'v1', 23.014, 'ok', 0.0038, 1557, 'free', NULL),
('2025-03-03T07:37:00+00:00', 'ranker', 'v1', 46.634, 'ok', 0.8148, 281, NULL, NULL),
('2025-03-03T08:07:00+00:00', 'summarizer', 'v2', 179.633, 'ok', 0.6073, 681, 'enterprise', true),
('2025-03-03T08:55:00+00:00', 'classifier', 'v2', 112.466, 'ok', 0.1599, 845, 'free', false),
('2025-03-03T09:22:00+00:00', 'ranker', 'v2', 52.385, 'ok', 0.1052, 157, 'enterprise', false),
('2025-03-03T10:00:00+00:00', 'summarizer', 'v2', 32.507, 'ok', 0.1732, 282, NULL, true),
('2025-03-03T10:54:00+00:00', 'classifier', 'v2', 92.425, 'ok', 0.7596, 1606, 'enterprise', true),
('2025-03-03T11:20:00+00:00', 'ranker', 'v2', 60.934, 'ok', 0.2474, 512, 'pro', NULL),
('2025-03-03T11:58:00+00:00', 'summarizer', 'v2', 139.444, 'ok', 0.9924, 1049, 'pro', false),
('2025-03-03T12:29:00+00:00', 'classifier', 'v1', 25.045, 'ok', 0.9144, 92, 'enterprise', NULL),
('2025-03-03T13:06:00+00:00', 'ranker', 'v1', 83.002, 'error', 0.1778, 1245, 'enterprise', false),
('2025-03-03T13:40:00+00:00', 'summarizer', 'v1', 19.99, 'ok', 0.3687, 299, 'free', NULL),
('2025-03-03T14:25:00+00:00', 'classifier', 'v1', 95.135, 'ok', 0.0779, 74, NULL, false),
('2025-03-03T15:09:00+00:00', 'ranker', 'v1', 42.967, 'ok', NULL, 345, NULL, false),
('2025-03-03T15:39:00+00:00', 'summarizer', 'v1', 47.963, 'ok', 0.3124, 1170, 'enterprise', true),
('2025-03-03T16:21:00+00:00', 'classifier', 'v1', 130.974, 'ok', 0.942, 899, 'pro', true),
('2025-03-03T16:48:00+00:00', 'ranker', 'v2', 95.141, 'ok', 0.1625, 40, 'free', false),
('2025-03-03T17:26:00+00:00', 'summarizer', 'v2', 271.814, 'ok', 0.3708, 1043, 'pro', NULL),
('2025-03-03T18:10:00+00:00', 'classifier', 'v2', 34.267, 'ok', 0.4905, 1658, 'pro', true),
('2025-03-03T18:40:00+00:00', 'ranker', 'v2', 101.48, 'ok', 0.0863, 1468, 'pro', false),
('2025-03-03T19:20:00+00:00', 'summarizer', 'v2', 75.446, 'ok', 0.5654, 95, NULL, false),
('2025-03-03T19:55:00+00:00', 'classifier', 'v2', 47.624, 'ok', 0.8973, 94, 'free', false),
('2025-03-03T20:37:00+00:00', 'ranker', 'v2', 20.44, 'ok', 0.3062, 870, 'enterprise', false),
('2025-03-03T21:11:00+00:00', 'summarizer', 'v1', 43.639, 'ok', 0.0234, 1277, NULL, true),
('2025-03-03T21:48:00+00:00', 'classifier', 'v1', 47.299, 'ok', 0.8105, 829, 'free', NULL),
('2025-03-03T22:22:00+00:00', 'ranker', 'v1', 43.408, 'ok', 0.6571, 93, 'pro', NULL),
('2025-03-03T23:05:00+00:00', 'summarizer', 'v1', 98.002, 'error', 0.3779, 1957, 'pro', NULL),
('2025-03-03T23:34:00+00:00', 'classifier', 'v1', 81.623, 'ok', 0.9566, 1886, 'pro', false),
('2025-03-04T00:16:00+00:00', 'ranker', 'v1', 27.413, 'ok', 0.8965, 573, NULL, NULL),
('2025-03-04T00:54:00+00:00', 'summarizer', 'v1', 56.177, 'ok', 0.506, 663, 'enterprise', NULL),
('2025-03-04T01:29:00+00:00', 'classifier', 'v2', 36.962, 'ok', 0.8954, 355, 'enterprise', NULL),
('2025-03-04T02:16:00+00:00', 'ranker', 'v2', 131.269, 'ok', 0.8961, 526, NULL, false),
('2025-03-04T02:48:00+00:00', 'summarizer', 'v2', 61.835, 'ok', 0.1768, 1532, 'free', true),
('2025-03-04T03:30:00+00:00', 'classifier', 'v2', 27.035, 'ok', 0.6637, 650, 'free', false),
('2025-03-04T03:52:00+00:00', 'ranker', 'v2', 36.448, 'ok', 0.3641, 107, 'pro', true),
('2025-03-04T04:35:00+00:00', 'summarizer', 'v2', 61.642, 'error', 0.3037, 1081, 'enterprise', false),
('2025-03-04T05:12:00+00:00', 'classifier', 'v2', 48.048, 'ok', 0.8285, 334, 'pro', NULL),
('2025-03-04T05:49:00+00:00', 'ranker', 'v1', 80.551, 'error', 0.6655, 562, NULL, true),
('2025-03-04T06:19:00+00:00', 'summarizer', 'v1', 148.016, 'ok', 0.5176, 1019, 'pro', NULL),
('2025-03-04T06:56:00+00:00', 'classifier', 'v1', 20.047, 'ok', 0.0584, 1605, 'free', NULL),
('2025-03-04T07:52:00+00:00', 'ranker', 'v1', 132.583, 'ok', 0.6081, 1048, NULL, false),
('2025-03-04T08:15:00+00:00', 'summarizer', 'v1', 55.115, 'ok', 0.7243, 988, 'free', true),
('2025-03-04T09:00:00+00:00', 'classifier', 'v1', 87.528, 'ok', 0.2259, 225, 'enterprise', NULL),
('2025-03-04T09:44:00+00:00', 'ranker', 'v1', 26.725, 'ok', 0.8453, 1467, 'free', true),
('2025-03-04T10:21:00+00:00', 'summarizer', 'v2', 60.23, 'ok', 0.2653, 1324, 'pro', NULL),
('2025-03-04T10:54:00+00:00', 'classifier', 'v2', 18.906, 'ok', 0.3269, 1812, NULL, true),
('2025-03-04T11:34:00+00:00', 'ranker', 'v2', 84.604, 'ok', 0.4695, 1729, 'free', NULL),
('2025-03-04T12:05:00+00:00', 'summarizer', 'v2', 100.706, 'ok', 0.3916, 1208, 'free', false),
('2025-03-04T12:34:00+00:00', 'classifier', 'v2', 45.328, 'error', NULL, 1428, 'free', false),
('2025-03-04T13:08:00+00:00', 'ranker', 'v2', 70.873, 'ok', 0.8176, 1688, 'free', false),
('2025-03-04T13:55:00+00:00', 'summarizer', 'v2', 32.814, 'ok', NULL, 1746, 'free', false),
('2025-03-04T14:40:00+00:00', 'classifier', 'v1', 42.813, 'ok', 0.205, 663, 'enterprise', true),
('2025-03-04T15:05:00+00:00', 'ranker', 'v1', 24.846, 'ok', 0.964, 1041, NULL, true),
('2025-03-04T15:53:00+00:00', 'summarizer', 'v1', 181.035, 'error', 0.0983, 970, 'free', false),
('2025-03-04T16:29:00+00:00', 'classifier', 'v1', 15.035, 'ok', NULL, 1015, 'free', true),
('2025-03-04T16:53:00+00:00', 'ranker', 'v1', 144.115, 'ok', 0.8152, 1931, 'pro', true),
('2025-03-04T17:30:00+00:00', 'summarizer', 'v1', 18.089, 'ok', 0.6972, 1621, 'free', false),
('2025-03-04T18:12:00+00:00', 'classifier', 'v1', 42.597, 'ok', 0.0862, 1829, 'free', true),
('2025-03-04T18:45:00+00:00', 'ranker', 'v2', 38.31, 'ok', 0.9824, 1301, 'pro', true),
('2025-03-04T19:20:00+00:00', 'summarizer', 'v2', 62.318, 'ok', 0.3485, 679, 'pro', true),
('2025-03-04T20:10:00+00:00', 'classifier', 'v2', 73.695, 'ok', 0.5792, 268, 'enterprise', true),
('2025-03-04T20:50:00+00:00', 'ranker', 'v2', 91.853, 'ok', 0.7032, 1737, 'pro', false),
('2025-03-04T21:11:00+00:00', 'summarizer', 'v2', 64.238, 'ok', 0.2587, 1965, 'free', NULL),
('2025-03-04T21:47:00+00:00', 'classifier', 'v2', 37.742, 'ok', 0.2974, 570, 'pro', NULL),
('2025-03-04T22:41:00+00:00', 'ranker', 'v2', 98.376, 'ok', 0.0126, 1759, NULL, false),
('2025-03-04T23:05:00+00:00', 'summarizer', 'v1', 54.673, 'ok', 0.6037, 838, 'free', false),
('2025-03-04T23:42:00+00:00', 'classifier', 'v1', 114.071, 'ok', 0.4212, 478, 'pro', false),
('2025-03-05T00:17:00+00:00', 'ranker', 'v1', 71.292, 'ok', 0.0979, 869, 'pro', true),
('2025-03-05T01:09:00+00:00', 'summarizer', 'v1', 53.618, 'ok', 0.6611, 1797, 'pro', false),
('2025-03-05T01:36:00+00:00', 'classifier', 'v1', 87.218, 'ok', 0.0381, 1122, 'pro', NULL),
('2025-03-05T02:09:00+00:00', 'ranker', 'v1', 55.813, 'ok', 0.7173, 1058, 'free', false),
('2025-03-05T02:51:00+00:00', 'summarizer', 'v1', 56.705, 'ok', 0.6844, 813, 'free', false),
('2025-03-05T03:36:00+00:00', 'classifier', 'v2', 46.633, 'ok', 0.0133, 867, NULL, false),
('2025-03-05T04:05:00+00:00', 'ranker', 'v2', 59.898, 'ok', 0.9536, 1999, 'pro', true),
('2025-03-05T04:45:00+00:00', 'summarizer', 'v2', 38.844, 'ok', 0.6343, 970, 'pro', NULL),
('2025-03-05T05:19:00+00:00', 'classifier', 'v2', 149.826, 'ok', 0.9961, 1566, 'pro', true),
('2025-03-05T05:56:00+00:00', 'ranker', 'v2', 79.784, 'ok', 0.9829, 1400, 'pro', true),
('2025-03-05T06:22:00+00:00', 'summarizer', 'v2', 35.766, 'ok', 0.6234, 184, 'enterprise', NULL),
('2025-03-05T07:08:00+00:00', 'classifier', 'v2', 76.717, 'ok', 0.015, 33, 'pro', NULL),
('2025-03-05T07:56:00+00:00', 'ranker', 'v1', 31.695, 'ok', 0.1857, 935, 'enterprise', NULL),
('2025-03-05T08:19:00+00:00', 'summarizer', 'v1', 90.921, 'ok', 0.7881, 1727, 'enterprise', NULL),
('2025-03-05T09:05:00+00:00', 'classifier', 'v1', 83.341, 'ok', 0.8827, 1146, 'free', true),
('2025-03-05T09:40:00+00:00', 'ranker', 'v1', 39.729, 'ok', NULL, 966, 'pro', false),
('2025-03-05T10:19:00+00:00', 'summarizer', 'v1', 39.954, 'ok', 0.1604, 666, NULL, false),
('2025-03-05T10:59:00+00:00', 'classifier', 'v1', 54.407, 'ok', 1.0, 1394, 'free', NULL),
('2025-03-05T11:38:00+00:00', 'ranker', 'v1', 36.358, 'error', NULL, 1518, 'enterprise', NULL),
('2025-03-05T12:11:00+00:00', 'summarizer', 'v2', 51.055, 'ok', 0.4156, 269, 'enterprise', NULL),
('2025-03-05T12:43:00+00:00', 'classifier', 'v2', 26.114, 'ok', 0.2842, 710, NULL, true),
('2025-03-05T13:26:00+00:00', 'ranker', 'v2', 28.569, 'ok', 0.3337, 566, 'enterprise', NULL),
('2025-03-05T14:06:00+00:00', 'summarizer', 'v2', 54.103, 'ok', 0.1276, 1310, 'free', NULL),
('2025-03-05T14:35:00+00:00', 'classifier', 'v2', 57.35, 'ok', NULL, 398, NULL, false),
('2025-03-05T15:01:00+00:00', 'ranker', 'v2', 73.705, 'ok', 0.5963, 1404, 'free', NULL),
('2025-03-05T15:38:00+00:00', 'summarizer', 'v2', 74.97, 'ok', 0.1813, 85, NULL, NULL),
('2025-03-05T16:34:00+00:00', 'classifier', 'v1', 31.866, 'ok', 0.1848, 80, 'enterprise', NULL),
('2025-03-05T17:04:00+00:00', 'ranker', 'v1', 64.193, 'ok', 0.5222, 1699, 'free', true),
('2025-03-05T17:46:00+00:00', 'summarizer', 'v1', 76.583, 'error', 0.5939, 1930, 'pro', true),
('2025-03-05T18:18:00+00:00', 'classifier', 'v1', 57.672, 'ok', 0.6269, 884, 'free', NULL),
('2025-03-05T18:45:00+00:00', 'ranker', 'v1', 39.249, 'ok', 0.569, 933, 'pro', NULL),
('2025-03-05T19:30:00+00:00', 'summarizer', 'v1', 146.155, 'ok', 0.0843, 1297, NULL, true),
('2025-03-05T20:04:00+00:00', 'classifier', 'v1', 192.319, 'ok', 0.3125, 1239, 'pro', true),
('2025-03-05T20:52:00+00:00', 'ranker', 'v2', 26.669, 'ok', 0.6769, 306, 'free', true),
('2025-03-05T21:30:00+00:00', 'summarizer', 'v2', 49.065, 'ok', 0.7548, 693, 'enterprise', true),
('2025-03-05T21:48:00+00:00', 'classifier', 'v2', 78.203, 'ok', 0.8696, 1496, 'free', NULL),
('2025-03-05T22:43:00+00:00', 'ranker', 'v2', 124.505, 'ok', 0.3874, 780, 'pro', true),
('2025-03-05T23:10:00+00:00', 'summarizer', 'v2', 72.679, 'ok', 0.9206, 1573, 'free', true),
('2025-03-05T23:42:00+00:00', 'classifier', 'v2', 60.457, 'ok', 0.6846, 1881, NULL, true),
('2025-03-06T00:32:00+00:00', 'ranker', 'v2', 20.97, 'ok', 0.7502, 1918, 'pro', true),
('2025-03-06T01:11:00+00:00', 'summarizer', 'v1', 25.704, 'ok', 0.5864, 29, NULL, true),
('2025-03-06T01:46:00+00:00', 'classifier', 'v1', 78.664, 'ok', 0.8851, 1078, 'enterprise', true),
('2025-03-06T02:22:00+00:00', 'ranker', 'v1', 61.154, 'ok', 0.7011, 753, 'enterprise', true),
('2025-03-06T02:59:00+00:00', 'summarizer', 'v1', 88.898, 'ok', 0.8664, 771, NULL, NULL),
('2025-03-06T03:24:00+00:00', 'classifier', 'v1', 44.901, 'ok', 0.0941, 429, NULL, false),
('2025-03-06T04:15:00+00:00', 'ranker', 'v1', 42.478, 'ok', 0.6087, 278, 'enterprise', NULL),
('2025-03-06T04:44:00+00:00', 'summarizer', 'v1', 37.499, 'ok', NULL, 1151, 'enterprise', false),
('2025-03-06T05:25:00+00:00', 'classifier', 'v2', 50.011, 'ok', 0.6398, 1898, 'free', false),
('2025-03-06T05:50:00+00:00', 'ranker', 'v2', 30.758, 'ok', 0.6697, 815, 'pro', true),
('2025-03-06T06:30:00+00:00', 'summarizer', 'v2', 45.892, 'ok', 0.9417, 1937, 'enterprise', NULL),
('2025-03-06T07:19:00+00:00', 'classifier', 'v2', 100.55, 'ok', NULL, 306, 'enterprise', NULL),
('2025-03-06T07:45:00+00:00', 'ranker', 'v2', 70.786, 'ok', 0.1054, 673, 'enterprise', true),
('2025-03-06T08:28:00+00:00', 'summarizer', 'v2', 25.897, 'ok', 0.1431, 1397, 'free', true),
('2025-03-06T08:59:00+00:00', 'classifier', 'v2', 78.64, 'ok', NULL, 1277, 'enterprise', false),
('2025-03-06T09:34:00+00:00', 'ranker', 'v1', 111.384, 'error', NULL, 705, 'enterprise', NULL),
('2025-03-06T10:22:00+00:00', 'summarizer', 'v1', 29.251, 'ok', 0.1802, 934, 'pro', true),
('2025-03-06T10:48:00+00:00', 'classifier', 'v1', 36.278, 'ok', 0.8396, 695, 'pro', true),
('2025-03-06T11:36:00+00:00', 'ranker', 'v1', 26.059, 'ok', 0.5135, 1302, 'pro', false),
('2025-03-06T12:13:00+00:00', 'summarizer', 'v1', 80.787, 'ok', 0.4321, 545, 'pro', NULL),
('2025-03-06T12:38:00+00:00', 'classifier', 'v1', 44.993, 'ok', 0.9785, 305, 'free', true),
('2025-03-06T13:28:00+00:00', 'ranker', 'v1', 45.13, 'error', 0.5266, 390, 'enterprise', true),
('2025-03-06T13:50:00+00:00', 'summarizer', 'v2', 93.921, 'ok', 0.1801, 1587, 'pro', false),
('2025-03-06T14:31:00+00:00', 'classifier', 'v2', 38.898, 'ok', 0.4955, 570, 'pro', NULL),
('2025-03-06T15:07:00+00:00', 'ranker', 'v2', 81.126, 'ok', 0.2023, 144, NULL, false),
('2025-03-06T15:41:00+00:00', 'summarizer', 'v2', 56.212, 'ok', 0.9456, 194, 'free', true),
('2025-03-06T16:32:00+00:00', 'classifier', 'v2', 17.665, 'ok', 0.9857, 85, 'pro', false),
('2025-03-06T17:05:00+00:00', 'ranker', 'v2', 94.005, 'ok', 0.9687, 156, 'free', true),
('2025-03-06T17:38:00+00:00', 'summarizer', 'v2', 28.846, 'ok', 0.0612, 1797, 'free', false),
('2025-03-06T18:23:00+00:00', 'classifier', 'v1', 51.595, 'ok', 0.2435, 191, 'pro', false),
('2025-03-06T18:50:00+00:00', 'ranker', 'v1', 33.221, 'ok', 0.0195, 1907, 'pro', true),
('2025-03-06T19:22:00+00:00', 'summarizer', 'v1', 142.039, 'ok', 0.4442, 728, 'free', false),
('2025-03-06T20:04:00+00:00', 'classifier', 'v1', 53.882, 'ok', 0.4057, 290, 'pro', NULL),
('2025-03-06T20:40:00+00:00', 'ranker', 'v1', 75.41, 'ok', 0.0185, 1310, NULL, false),
('2025-03-06T21:26:00+00:00', 'summarizer', 'v1', 70.208, 'error', 0.052, 753, 'enterprise', true),
('2025-03-06T21:57:00+00:00', 'classifier', 'v1', 185.872, 'ok', 0.9858, 666, NULL, false),
('2025-03-06T22:28:00+00:00', 'ranker', 'v2', 44.202, 'ok', 0.8705, 1368, 'free', true),
('2025-03-06T23:07:00+00:00', 'summarizer', 'v2', 56.49, 'ok', 0.0208, 295, NULL, true),
('2025-03-06T23:55:00+00:00', 'classifier', 'v2', 112.045, 'ok', 0.0344, 1323, 'enterprise', false),
('2025-03-07T00:37:00+00:00', 'ranker', 'v2', 32.803, 'ok', 0.2506, 1075, 'free', true),
('2025-03-07T01:02:00+00:00', 'summarizer', 'v2', 104.728, 'ok', 0.1204, 1227, 'enterprise', NULL),
('2025-03-07T01:46:00+00:00', 'classifier', 'v2', 213.706, 'ok', 0.8852, 1885, NULL, false),
('2025-03-07T02:18:00+00:00', 'ranker', 'v2', 22.635, 'ok', 0.4541, 1433, 'pro', false),
('2025-03-07T02:58:00+00:00', 'summarizer', 'v1', 18.88, 'ok', 0.6128, 970, 'enterprise', NULL),
('2025-03-07T03:30:00+00:00', 'classifier', 'v1', 44.21, 'ok', 0.3965, 1902, 'enterprise', NULL);
SELECT count(*) FROM events;
SELECT count(*), count(score), count(DISTINCT model) FROM events;
SELECT model, count(*) FROM events GROUP BY model ORDER BY model;
SELECT model, version, count(*) AS n FROM events GROUP BY model, version ORDER BY model, version;
SELECT model, round(avg(latency_ms)::numeric, 3) FROM events GROUP BY model ORDER BY model;
SELECT model, min(latency_ms), max(latency_ms), sum(tokens) FROM events GROUP BY model ORDER BY 1;
SELECT model, percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50 FROM events GROUP BY model ORDER BY model;
SELECT model, percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95, percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99 FROM events GROUP BY model ORDER BY model;
SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms) FROM events WHERE status = 'ok';
SELECT model, count(*) FILTER (WHERE status = 'error') AS errors, count(*) AS total FROM events GROUP BY model ORDER BY model;
SELECT model, round((count(*) FILTER (WHERE status = 'error'))::numeric / count(*), 6) AS error_rate FROM events GROUP BY model ORDER BY model;
SELECT date_trunc('hour', ts) AS hour, count(*) FROM events GROUP BY 1 ORDER BY 1 LIMIT 10;
SELECT date_trunc('day', ts) AS day, model, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2;
SELECT date_bin(interval '15 minutes', ts, timestamptz '2025-03-01 00:00:00+00') AS bucket, count(*) FROM events GROUP BY 1 ORDER BY 1 LIMIT 8;
SELECT date_bin(interval '6 hours', ts, timestamptz '2025-03-01 00:00:00+00') AS bucket, avg(score) FROM events GROUP BY 1 ORDER BY 1;
SELECT extract(hour FROM ts) AS h, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT extract(dow FROM ts) AS dow, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT date_part('day', ts) AS d, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT segment, count(*) FROM events GROUP BY segment ORDER BY segment NULLS FIRST;
SELECT coalesce(segment, 'unknown') AS segment, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT model, avg(CASE WHEN thumbs_up THEN 1.0 WHEN NOT thumbs_up THEN 0.0 END) AS up_rate FROM events GROUP BY model ORDER BY model;
SELECT model, count(*) FILTER (WHERE thumbs_up), count(*) FILTER (WHERE thumbs_up IS NULL) FROM events GROUP BY model ORDER BY model;
SELECT ts, model, latency_ms FROM events WHERE status = 'error' ORDER BY ts DESC LIMIT 5;
SELECT ts, latency_ms FROM events WHERE model = 'ranker' ORDER BY latency_ms DESC, ts LIMIT 3;
SELECT count(*) FROM events WHERE ts >= timestamptz '2025-03-02 00:00:00+00' AND ts < timestamptz '2025-03-03 00:00:00+00';
SELECT count(*) FROM events WHERE ts BETWEEN '2025-03-02' AND '2025-03-04';
SELECT count(*) FROM events WHERE model IN ('ranker', 'classifier') AND status <> 'error';
SELECT count(*) FROM events WHERE model NOT IN ('ranker');
SELECT count(*) FROM events WHERE segment IS NULL;
SELECT count(*) FROM events WHERE segment IS DISTINCT FROM 'pro';
SELECT count(*) FROM events WHERE model LIKE 'sum%';
SELECT count(*) FROM events WHERE model ILIKE 'RANK%';
SELECT count(*) FROM events WHERE score > 0.5 OR score IS NULL;
SELECT count(*) FROM events WHERE latency_ms > (SELECT avg(latency_ms) FROM events);
SELECT model, count(*) FROM events GROUP BY model HAVING count(*) > 79 ORDER BY model;
SELECT DISTINCT model FROM events ORDER BY model;
SELECT DISTINCT model, version FROM events ORDER BY model, version;
SELECT model, version FROM events GROUP BY model, version ORDER BY model DESC, version DESC LIMIT 2 OFFSET 1;
SELECT model, stddev_samp(latency_ms) > 0 AS spread FROM events GROUP BY model ORDER BY model;
SELECT model, round(stddev_pop(score)::numeric, 6), round(variance(score)::numeric, 6) FROM events GROUP BY model ORDER BY model;
SELECT model, round(corr(latency_ms, tokens)::numeric, 6) FROM events GROUP BY model ORDER BY model;
SELECT model, bool_and(latency_ms > 0), bool_or(status = 'error') FROM events GROUP BY model ORDER BY model;
SELECT model, string_agg(DISTINCT version, ',' ORDER BY version) FROM events GROUP BY model ORDER BY model;
SELECT model, array_agg(DISTINCT version ORDER BY version) FROM events GROUP BY model ORDER BY model;
SELECT model, max(ts) - min(ts) AS span FROM events GROUP BY model ORDER BY model;
WITH hourly AS (SELECT date_trunc('hour', ts) AS h, count(*) AS n FROM events GROUP BY 1) SELECT max(n), min(n) FROM hourly;
WITH per_model AS (SELECT model, avg(latency_ms) AS a FROM events GROUP BY model) SELECT model FROM per_model WHERE a = (SELECT max(a) FROM per_model);
SELECT e.model, e.ts FROM events e JOIN (SELECT model, max(ts) AS last FROM events GROUP BY model) m ON e.model = m.model AND e.ts = m.last ORDER BY e.model;
SELECT a.model, count(*) FROM events a LEFT JOIN events b ON a.ts = b.ts AND a.model <> b.model GROUP BY a.model ORDER BY 1;
SELECT model, ts, row_number() OVER (PARTITION BY model ORDER BY ts) AS rn FROM events ORDER BY model, ts LIMIT 6;
SELECT model, ts, lag(latency_ms) OVER (PARTITION BY model ORDER BY ts) AS prev FROM events ORDER BY model, ts LIMIT 6;
SELECT model, ts, lead(status, 2, 'none') OVER (PARTITION BY model ORDER BY ts) FROM events ORDER BY model, ts LIMIT 6;
SELECT model, ts, sum(tokens) OVER (PARTITION BY model ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM events ORDER BY model, ts LIMIT 6;
SELECT model, ts, rank() OVER (PARTITION BY model ORDER BY status), dense_rank() OVER (ORDER BY model) FROM events ORDER BY model, ts LIMIT 6;
SELECT model, round(avg(latency_ms) OVER (PARTITION BY model)::numeric, 3) FROM events ORDER BY model, ts LIMIT 3;
SELECT model, first_value(ts) OVER (PARTITION BY model ORDER BY ts), last_value(ts) OVER (PARTITION BY model ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM events ORDER BY model, ts LIMIT 3;
SELECT ntile(4) OVER (ORDER BY ts), ts FROM events ORDER BY ts LIMIT 5;
SELECT model FROM events WHERE status = 'error' UNION SELECT model FROM events WHERE score > 0.99 ORDER BY 1;
SELECT model FROM events UNION ALL SELECT model FROM events LIMIT 0;
SELECT model, version FROM events INTERSECT SELECT model, 'v1' FROM events ORDER BY 1, 2;
SELECT model FROM events EXCEPT SELECT 'ranker' ORDER BY 1;
SELECT count(*) FROM (SELECT DISTINCT date_trunc('hour', ts) FROM events) t;
SELECT model, count(*) FROM events WHERE EXISTS (SELECT 1 FROM events e2 WHERE e2.model = events.model AND e2.status = 'error') GROUP BY model ORDER BY model;
SELECT model, (SELECT count(*) FROM events e2 WHERE e2.model = e.model) FROM (SELECT DISTINCT model FROM events) e ORDER BY model;
SELECT CASE WHEN latency_ms < 50 THEN 'fast' WHEN latency_ms < 100 THEN 'ok' ELSE 'slow' END AS bucket, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT width_bucket(latency_ms, 0, 200, 4) AS b, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT model, mode() WITHIN GROUP (ORDER BY segment) FROM events GROUP BY model ORDER BY model;
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY tokens) FROM events;
SELECT to_char(date_trunc('day', ts), 'YYYY-MM-DD') AS day, count(*) FROM events GROUP BY 1 ORDER BY 1;
SELECT to_char(ts, 'YYYY-MM-DD HH24:MI') FROM events ORDER BY ts LIMIT 3;
SELECT to_char(ts, 'Dy DD Mon YYYY HH12:MI AM') FROM events ORDER BY ts LIMIT 3;
SELECT model, nullif(status, 'ok') FROM events ORDER BY ts LIMIT 5;
SELECT greatest(latency_ms, 100), least(tokens, 500) FROM events ORDER BY ts LIMIT 5;
SELECT count(*) FROM events WHERE model = ANY(ARRAY['ranker', 'classifier']);
SELECT sum(tokens)::float8 / count(*) FROM events;
SELECT count(*) FROM events WHERE ts > timestamptz '2025-03-05 00:00:00+00' - interval '1 day';
SELECT max(ts) FROM events;
SELECT min(ts)::date FROM events;
SELECT model, count(*) * 100.0 / sum(count(*)) OVER () AS share FROM events GROUP BY model ORDER BY model;
SELECT ts FROM events ORDER BY ts LIMIT 1 OFFSET 100;
-- unsupported: TABLESAMPLE
SELECT count(*) FROM events TABLESAMPLE SYSTEM (10);
-- WITHIN GROUP (ORDER BY ... DESC) ranks from the largest value.
SELECT percentile_cont(0.1) WITHIN GROUP (ORDER BY latency_ms DESC), percentile_disc(0.1) WITHIN GROUP (ORDER BY latency_ms DESC), percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms) FROM events;
SELECT model, percentile_cont(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY score DESC), percentile_disc(0.5) WITHIN GROUP (ORDER BY score DESC), percentile_disc(0.5) WITHIN GROUP (ORDER BY score) FROM events GROUP BY model ORDER BY model;
