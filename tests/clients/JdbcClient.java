// Drives a running Lookout with pgjdbc, as DBeaver, Metabase and Tableau do:
// DatabaseMetaData, a PreparedStatement executed 10 times (pgjdbc switches to a
// named server-side statement and binary results after the 5th), timestamptz
// and boolean parameters, inserts, and a failing statement that must not end
// the session.
//
// Usage: java -cp postgresql.jar JdbcClient.java PORT ROWS

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;

public class JdbcClient {
    static void check(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        long rows = Long.parseLong(args[1]);
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/lookout?user=lookout";
        try (Connection conn = DriverManager.getConnection(url)) {
            metadata(conn.getMetaData());
            queries(conn, rows);
            inserts(conn);
            errors(conn, rows);
        }
        System.out.println("pgjdbc ok");
    }

    static void metadata(DatabaseMetaData md) throws SQLException {
        check(md.getDatabaseProductName().equals("PostgreSQL"), "product name");
        check(md.getDatabaseMajorVersion() == 16, "major version");

        List<String> schemas = new ArrayList<>();
        try (ResultSet rs = md.getSchemas()) {
            while (rs.next()) {
                schemas.add(rs.getString("TABLE_SCHEM"));
            }
        }
        check(schemas.contains("public") && schemas.contains("lookout"), "getSchemas: " + schemas);

        List<String> tables = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
            while (rs.next()) {
                tables.add(rs.getString("TABLE_NAME"));
                check(rs.getString("TABLE_TYPE").equals("TABLE"), "getTables type");
            }
        }
        check(tables.contains("events") && tables.contains("client_notes"), "getTables: " + tables);

        List<String> views = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, "lookout", "%", new String[] {"VIEW"})) {
            while (rs.next()) {
                views.add(rs.getString("TABLE_NAME"));
            }
        }
        check(views.contains("alerts"), "getTables views: " + views);

        List<String> columns = new ArrayList<>();
        try (ResultSet rs = md.getColumns(null, "public", "events", "%")) {
            while (rs.next()) {
                String name = rs.getString("COLUMN_NAME");
                columns.add(name);
                String type = rs.getString("TYPE_NAME");
                int sqlType = rs.getInt("DATA_TYPE");
                if (name.equals("ts")) {
                    check(type.equals("timestamptz"), "ts TYPE_NAME " + type);
                    check(sqlType == java.sql.Types.TIMESTAMP
                            || sqlType == java.sql.Types.TIMESTAMP_WITH_TIMEZONE, "ts DATA_TYPE " + sqlType);
                }
                if (name.equals("latency_ms")) {
                    check(type.equals("float8"), "latency TYPE_NAME " + type);
                    check(sqlType == java.sql.Types.DOUBLE, "latency DATA_TYPE " + sqlType);
                }
                if (name.equals("model")) {
                    check(type.equals("text"), "model TYPE_NAME " + type);
                }
            }
        }
        check(columns.size() == 18 && columns.get(0).equals("ts"), "getColumns: " + columns);

        try (ResultSet rs = md.getPrimaryKeys(null, "public", "events")) {
            check(!rs.next(), "getPrimaryKeys: none");
        }
        int types = 0;
        boolean sawTimestamptz = false;
        try (ResultSet rs = md.getTypeInfo()) {
            while (rs.next()) {
                types++;
                sawTimestamptz |= rs.getString("TYPE_NAME").equals("timestamptz");
            }
        }
        check(types > 20 && sawTimestamptz, "getTypeInfo: " + types);
        try (ResultSet rs = md.getCatalogs()) {
            check(rs.next() && rs.getString(1).equals("lookout"), "getCatalogs");
        }
    }

    static void queries(Connection conn, long rows) throws SQLException {
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery("SELECT model, count(*) AS n FROM events GROUP BY model ORDER BY model")) {
            long total = 0;
            while (rs.next()) {
                total += rs.getLong("n");
            }
            check(total == rows, "counts " + total);
        }
        // Ten executions: the last five run as a named statement with binary results.
        OffsetDateTime from = OffsetDateTime.of(2025, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC);
        String sql = "SELECT count(*), min(ts), max(latency_ms), bool_or(latency_ms > ?) "
                + "FROM events WHERE ts >= ? AND (latency_ms > 0) = ?";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            Long first = null;
            Timestamp firstTs = null;
            for (int i = 0; i < 10; i++) {
                ps.setDouble(1, 100.0);
                ps.setObject(2, from);
                ps.setBoolean(3, true);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "prepared row");
                    long n = rs.getLong(1);
                    Timestamp minTs = rs.getTimestamp(2);
                    OffsetDateTime minOdt = rs.getObject(2, OffsetDateTime.class);
                    check(rs.getBoolean(4), "bool_or");
                    check(minOdt.getYear() == 2025, "min(ts) as OffsetDateTime " + minOdt);
                    if (first == null) {
                        first = n;
                        firstTs = minTs;
                    }
                    check(n == first, "run " + i + ": count " + n + " != " + first);
                    check(minTs.equals(firstTs), "run " + i + ": min(ts) " + minTs + " != " + firstTs);
                }
            }
            check(first == rows, "prepared count " + first);
        }
    }

    static void inserts(Connection conn) throws SQLException {
        String sql = "INSERT INTO client_notes (ts, model, value, ok) VALUES (?, ?, ?, ?)";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < 10; i++) {
                ps.setObject(1, OffsetDateTime.of(2025, 2, 1, i, 0, 0, 0, ZoneOffset.UTC));
                ps.setString(2, "jdbc");
                ps.setDouble(3, i);
                ps.setBoolean(4, i % 2 == 0);
                check(ps.executeUpdate() == 1, "insert count");
            }
        }
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery(
                        "SELECT count(*), sum(value), min(ts) FROM client_notes WHERE model = 'jdbc' AND ok")) {
            check(rs.next(), "insert check row");
            check(rs.getLong(1) == 5 && rs.getDouble(2) == 20.0, "inserted rows");
            OffsetDateTime min = rs.getObject(3, OffsetDateTime.class);
            check(min.equals(OffsetDateTime.of(2025, 2, 1, 0, 0, 0, 0, ZoneOffset.UTC)), "inserted ts " + min);
        }
    }

    static void errors(Connection conn, long rows) throws SQLException {
        try (Statement st = conn.createStatement()) {
            try {
                st.executeQuery("SELECT * FROM no_such_table");
                check(false, "missing table must fail");
            } catch (SQLException e) {
                check(e.getSQLState().equals("42P01"), "SQLSTATE " + e.getSQLState());
            }
            try (ResultSet rs = st.executeQuery("SELECT count(*) FROM events")) {
                check(rs.next() && rs.getLong(1) == rows, "session works after an error");
            }
        }
    }
}
